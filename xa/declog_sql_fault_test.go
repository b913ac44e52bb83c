package xa

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/privatedb"
	"github.com/imagomq/imago/migrations"
)

// The decision table on a private PostgreSQL (internal/privatedb) the test can shut down or run
// out of disk: what a write that meets the server in those states tells its waiter.

// privateSQLLogDB is a private PostgreSQL as a decision-table database, with a pool that
// keeps no idle connection (each write after a failed one opens a new session).
func privateSQLLogDB(t *testing.T, opts ...privatedb.Option) (*privatedb.Server, sqlLogDB) {
	t.Helper()
	p := privatedb.Postgres(t, opts...)
	db := p.DB()
	db.SetMaxIdleConns(0)
	return p, sqlLogDB{dialect: migrations.Postgres, db: db, table: "imago.xa_decisions", dsn: p.DSN()}
}

// TestSQLDecisionLogServerRefusesConnections: a write that cannot open a session, because
// PostgreSQL refuses new connections while it starts, recovers from a crash (a PANIC for lack
// of disk) or shuts down (57P03 cannot_connect_now, sent before any statement), sent nothing:
// it is retried until the write timeout and answered as not written, and the log stays
// usable. It once counted as a write of unknown outcome (a server error of class 57), which
// failed the log until a restart and left the transaction in doubt.
func TestSQLDecisionLogServerRefusesConnections(t *testing.T) {
	p, d := privateSQLLogDB(t)
	ctx := context.Background()
	node := newNode(t)
	l, _ := openSQLLog(t, d, node, sqlLogOpts{writeTimeout: time.Second})
	if err := l.appendSync(ctx, nodeRecord(node, 1, StatusCommitting)); err != nil {
		t.Fatal(err)
	}
	// The writer loses its session between two writes (a write cancelled by the write
	// timeout, here behind a row lock): the next write opens a new one.
	release := blockRow(t, d, node, nodeRecord(node, 1, StatusCommitting).Gtrid)
	if err := l.appendSync(ctx, nodeRecord(node, 1, StatusCommitted)); !errors.Is(err, errNotWritten) {
		t.Fatalf("a write cancelled behind a row lock: %v, want %v", err, errNotWritten)
	}
	release()
	if l.conn != nil {
		t.Fatal("the writer kept its session after a failed write")
	}

	// A smart shutdown: the open session (hold) keeps the server up, new ones are refused.
	hold, err := d.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGTERM)
	waitFor(t, "PostgreSQL to refuse new connections", func() bool {
		db, err := sql.Open(p.Driver(), p.DSN())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Ping()
		return err != nil && strings.Contains(err.Error(), "57P03")
	})
	err = l.appendSync(ctx, nodeRecord(node, 2, StatusCommitting))
	if !errors.Is(err, errNotWritten) {
		t.Fatalf("a write refused at connection: %v, want %v (nothing was sent)", err, errNotWritten)
	}
	if err := l.failedErr(); err != nil {
		t.Fatalf("a write refused at connection failed the log: %v", err)
	}
	hold.Close()
	waitFor(t, "PostgreSQL to shut down", p.Exited)
	p.Start()
	if err := l.appendSync(ctx, nodeRecord(node, 3, StatusCommitting)); err != nil {
		t.Fatalf("a write once the server is back: %v", err)
	}
}

// commitDelayed starts a private PostgreSQL on which panicAfterCommit can PANIC a session after
// its commit is durable: on a small tmpfs, each commit waiting 0.1 s (commit_delay) for others
// to join its WAL flush, and WAL buffers that hold a record past a segment's end unwritten.
var commitDelayed = []privatedb.Option{privatedb.OnTmpfs("64m"),
	privatedb.Setting("commit_delay", "100000"), privatedb.Setting("commit_siblings", "0"),
	privatedb.Setting("wal_buffers", "4MB")}

// panicAfterCommit sets the scene on p (started with commitDelayed): its WAL moves on to a new
// segment filled but for 32 kB (a message nobody waits for), then its disk fills. The returned
// cross runs while a session commits a statement holding query: it waits until that commit
// waits in commit_delay (the statement started more than 20 ms ago; its own work takes far
// less), then inserts from another session a record past the segment's end. The committing
// session then flushes the WAL of both: the segment that holds its commit is written and
// fsync'd, creating the next one fails for lack of space, and it PANICs, its commit durable.
// free waits until the server is down, frees the space and starts it again.
func panicAfterCommit(t *testing.T, p *privatedb.Server, query string) (cross func() error, free func()) {
	t.Helper()
	admin, err := sql.Open(p.Driver(), p.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	admin.SetMaxOpenConns(1)
	const segment, margin = 1 << 20, 32 << 10
	var pos int64
	if err := admin.QueryRow(`SELECT pg_switch_wal() IS NOT NULL, ((pg_current_wal_insert_lsn() - '0/0') % $1)::bigint`, segment).Scan(new(bool), &pos); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(`SELECT pg_logical_emit_message(false, 'imago-test', repeat('x', $1))`, segment-pos-margin); err != nil {
		t.Fatal(err)
	}
	fill := p.Fill(0)
	cross = func() error {
		deadline := time.Now().Add(30 * time.Second)
		for {
			var n int
			err := admin.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND position($1 in query) > 0
				AND clock_timestamp() - query_start > interval '20 ms'`, query).Scan(&n)
			if err == nil && n == 1 {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no session committed %q within 30 s (%v)", query, err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		_, err := admin.Exec(`SELECT pg_logical_emit_message(false, 'imago-test', repeat('x', $1))`, 2*margin)
		return err
	}
	free = func() {
		t.Helper()
		waitFor(t, "PostgreSQL to shut down for lack of space", p.Exited)
		if log := p.Log(); !strings.Contains(log, "PANIC") || !strings.Contains(log, "No space left on device") {
			t.Fatalf("PostgreSQL shut down, but not for lack of space:\n%s", log)
		}
		fill()
		p.Start()
	}
	return cross, free
}

// TestSQLDecisionLogPanicAfterCommit: PostgreSQL, out of disk, PANICs in the middle of writing
// WAL, and the session whose write made it tell so gets the PANIC (53100 disk_full, an error
// the server answered). That does not mean its transaction rolled back: the session flushes
// what every session inserted, segment by segment, and the segment that holds its own commit
// may be on disk, fsync'd, before the next one cannot be created (panicAfterCommit): the
// commit decision is in the table once the server is back. The write must not be answered as
// not written (the transaction would roll back while its commit decision is durable): its
// outcome is unknown, and the log fails (until it heals once the server is back).
func TestSQLDecisionLogPanicAfterCommit(t *testing.T) {
	p, d := privateSQLLogDB(t, commitDelayed...)
	ctx := context.Background()
	node := newNode(t)
	l, _ := openSQLLog(t, d, node, sqlLogOpts{writeTimeout: time.Second})
	if err := l.appendSync(ctx, nodeRecord(node, 1, StatusCommitting)); err != nil {
		t.Fatal(err)
	}
	cross, free := panicAfterCommit(t, p, "INSERT INTO imago.xa_decisions")
	done := make(chan error, 1)
	go func() { done <- l.appendSync(ctx, nodeRecord(node, 2, StatusCommitting)) }()
	if err := cross(); err != nil {
		t.Fatalf("the record past the segment's end: %v", err)
	}
	err := <-done
	t.Logf("the write: %v", err)
	if l.failedErr() == nil {
		t.Fatal("a write of unknown outcome left the log usable")
	}
	free()
	var status string
	if err := d.db.QueryRow(`SELECT status FROM imago.xa_decisions WHERE node_id = $1 AND gtrid = $2`,
		node, nodeRecord(node, 2, StatusCommitting).Gtrid).Scan(&status); err != nil {
		t.Fatalf("the scene did not happen (the decision's commit was to be durable before the PANIC): %v\n%s", err, p.Log())
	}
	if err == nil || errors.Is(err, errNotWritten) {
		t.Fatalf("the write was answered %v, but its commit decision is in the table (%s)", err, status)
	}
}

// TestSQLDecisionLogMariaDBDiskFull: the decision table of a MariaDB whose disk is full takes
// rows while its pages have room, then refuses the next one ("table is full", 1114, the
// statement rolled back): that write is retried until the write timeout and answered as not
// written (its transaction rolls back), the log stays usable, and once the space is back the
// next write succeeds without a restart.
func TestSQLDecisionLogMariaDBDiskFull(t *testing.T) {
	p := privatedb.MariaDB(t, privatedb.OnTmpfs("128m"))
	db, err := OpenMySQLDB(p.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	d := sqlLogDB{dialect: migrations.MySQL, db: db, table: "imago_xa_decisions", dsn: p.DSN()}
	ctx := context.Background()
	node := newNode(t)
	l, _ := openSQLLog(t, d, node, sqlLogOpts{writeTimeout: 500 * time.Millisecond})
	big := func(i int) record { // a few rows fill a page
		r := nodeRecord(node, i, StatusCommitting)
		r.Message = strings.Repeat("m", 4000)
		return r
	}
	free := p.Fill(0)
	var refused record
	for i := 1; ; i++ {
		if i > 5000 {
			t.Fatal("the decision table took 5000 rows on a full disk")
		}
		err := l.appendSync(ctx, big(i))
		if err == nil {
			continue
		}
		if !errors.Is(err, errNotWritten) || !strings.Contains(err.Error(), "1114") {
			t.Fatalf("write %d on a full disk: %v, want %v for a table that is full (1114)", i, err, errNotWritten)
		}
		refused = big(i)
		break
	}
	if err := l.failedErr(); err != nil {
		t.Fatalf("a write the database refused failed the log: %v", err)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM imago_xa_decisions WHERE node_id = ? AND gtrid = ?", node, refused.Gtrid).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the refused record: %d rows, %v; want none", n, err)
	}
	free()
	if err := l.appendSync(ctx, refused); err != nil {
		t.Fatalf("a write once the space is back: %v", err)
	}
}

// TestSQLDecisionLogServerRestartedWhileIdle: the decision table's server crashes and comes
// back (a kill -9 and a start, as PostgreSQL after its PANIC on a full disk) while the log is
// idle. The writer's session died with it: the next write goes on a new session and
// succeeds. It once went on the dead session, whose error (unexpected EOF) left its outcome
// unknown and failed the log until a restart of the coordinator: every transaction after a
// restart of that database rolled back.
func TestSQLDecisionLogServerRestartedWhileIdle(t *testing.T) {
	for _, dialect := range []string{migrations.MySQL, migrations.Postgres} {
		t.Run(dialect, func(t *testing.T) {
			var p *privatedb.Server
			var d sqlLogDB
			if dialect == migrations.Postgres {
				p, d = privateSQLLogDB(t)
			} else {
				var db *sql.DB
				p, db = privateMariaDB(t)
				d = sqlLogDB{dialect: dialect, db: db, table: "imago_xa_decisions", dsn: p.DSN()}
			}
			ctx := context.Background()
			node := newNode(t)
			l, _ := openSQLLog(t, d, node, sqlLogOpts{writeTimeout: time.Second})
			if err := l.appendSync(ctx, nodeRecord(node, 1, StatusCommitting)); err != nil {
				t.Fatal(err)
			}
			p.Kill()
			p.Start()
			if err := l.appendSync(ctx, nodeRecord(node, 2, StatusCommitting)); err != nil {
				t.Fatalf("the first write after the server's restart: %v", err)
			}
			if err := l.failedErr(); err != nil {
				t.Fatalf("the log failed: %v", err)
			}
		})
	}
}
