package xa

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/migrations"
)

// openLockTimeoutDB is d's database through a pool whose sessions give up waiting for a row
// lock after a short time: the statement fails and the database rolls it back (PostgreSQL
// 55P03 lock_not_available, MariaDB 1205 lock wait timeout), so the write's outcome is
// known: nothing was written.
func openLockTimeoutDB(t *testing.T, d sqlLogDB) sqlLogDB {
	t.Helper()
	out := d
	var err error
	if d.dialect == migrations.Postgres {
		sep := "?"
		if strings.Contains(d.dsn, "?") {
			sep = "&"
		}
		out.dsn = d.dsn + sep + "lock_timeout=200"
		out.db, err = sql.Open("pgx", out.dsn)
	} else {
		sep := "?"
		if strings.Contains(d.dsn, "?") {
			sep = "&"
		}
		out.dsn = d.dsn + sep + "innodb_lock_wait_timeout=1"
		out.db, err = sql.Open("mysql", out.dsn) // a plain pool: it sends the DSN's variables
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.db.Close() })
	return out
}

// A write the database refused and rolled back (here: its row lock was not granted in time)
// is retried: the log must not fail for good on a transient error whose outcome is known.
// Once the write timeout passes, the waiters learn that nothing was written, and the log
// still takes the next records.
func TestSQLDecisionLogRetriesKnownFailures(t *testing.T) {
	eachSQLLogDB(t, func(t *testing.T, admin sqlLogDB) {
		ctx := context.Background()
		d := openLockTimeoutDB(t, admin)

		t.Run("succeeds once the lock is free", func(t *testing.T) {
			node := newNode(t)
			l, _ := openSQLLog(t, d, node, sqlLogOpts{})
			first := nodeRecord(node, 1, StatusCommitting)
			if err := l.appendSync(ctx, first); err != nil {
				t.Fatal(err)
			}
			release := blockRow(t, admin, node, first.Gtrid)
			done := make(chan error, 1)
			// A status that stays (a final one past the retention is swept at the reopen).
			go func() { done <- l.appendSync(ctx, nodeRecord(node, 1, StatusInDoubt)) }()
			// The fault lasts long enough for at least one lock timeout (200 ms in PostgreSQL,
			// 1 s in MariaDB, whose lock monitor may take up to another second to notice).
			time.Sleep(2500 * time.Millisecond)
			release()
			if err := <-done; err != nil {
				t.Fatalf("a write refused while a row was locked was not retried: %v", err)
			}
			l.close()
			_, recs := openSQLLog(t, admin, node, sqlLogOpts{})
			if got := byGtrid(recs)[first.Gtrid]; got.Status != StatusInDoubt {
				t.Fatalf("after the retry the row is %q, want in_doubt", got.Status)
			}
		})

		t.Run("gives up after the write timeout without failing", func(t *testing.T) {
			node := newNode(t)
			l, _ := openSQLLog(t, d, node, sqlLogOpts{writeTimeout: 3 * time.Second})
			first := nodeRecord(node, 1, StatusCommitting)
			if err := l.appendSync(ctx, first); err != nil {
				t.Fatal(err)
			}
			release := blockRow(t, admin, node, first.Gtrid)
			if err := l.appendSync(ctx, nodeRecord(node, 1, StatusInDoubt)); err == nil {
				t.Fatal("a write that could not take its row lock within the write timeout succeeded")
			}
			release()
			if err := l.appendSync(ctx, nodeRecord(node, 2, StatusCommitting)); err != nil {
				t.Fatalf("the log failed for good after a write that certainly wrote nothing: %v", err)
			}
			l.close()
			_, recs := openSQLLog(t, admin, node, sqlLogOpts{})
			got := byGtrid(recs)
			if got[first.Gtrid].Status != StatusCommitting || len(got) != 2 {
				t.Fatalf("table holds %v (%d rows); want the first record unchanged and the third", got[first.Gtrid].Status, len(got))
			}
		})
	})
}

// A write slower than the write timeout (here: waiting for a row lock held by another session,
// through the log's ordinary pool) must not leave its outcome unknown and fail the log for
// good: the database is made to give up on it first (a server-side timeout, which rolls it
// back), so the waiters learn that nothing was written and the log takes the next records.
func TestSQLDecisionLogSlowWriteDoesNotFailTheLog(t *testing.T) {
	eachSQLLogDB(t, func(t *testing.T, d sqlLogDB) {
		ctx := context.Background()
		admin := openSQLLogDB(t, d.dialect)
		node := newNode(t)
		l, _ := openSQLLog(t, d, node, sqlLogOpts{writeTimeout: time.Second})
		first := nodeRecord(node, 1, StatusCommitting)
		if err := l.appendSync(ctx, first); err != nil {
			t.Fatal(err)
		}
		release := blockRow(t, admin, node, first.Gtrid)
		err := l.appendSync(ctx, nodeRecord(node, 1, StatusInDoubt))
		release()
		if err == nil {
			t.Fatal("a write blocked past the write timeout succeeded")
		}
		if ferr := l.failedErr(); ferr != nil {
			t.Fatalf("a write slower than the write timeout failed the log for good: %v", ferr)
		}
		if err := l.appendSync(ctx, nodeRecord(node, 2, StatusCommitting)); err != nil {
			t.Fatalf("the next write: %v", err)
		}
	})
}
