package xa

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/migrations"
)

// The decision log in a table, against real MariaDB and PostgreSQL. Every test writes under
// node ids of its own: the table is shared with the other tests and packages.

// sqlLogDB is one database the table log runs on.
type sqlLogDB struct {
	dialect string
	db      *sql.DB
	table   string
	dsn     string
}

// ph is the n-th placeholder of the dialect.
func (d sqlLogDB) ph(n int) string {
	if d.dialect == migrations.Postgres {
		return fmt.Sprintf("$%d", n)
	}
	return "?"
}

// eachSQLLogDB runs fn for MariaDB and PostgreSQL, each with a pool opened as serve opens a
// resource's (OpenMySQLDB keeps prepared statements).
func eachSQLLogDB(t *testing.T, fn func(t *testing.T, d sqlLogDB)) {
	for _, dialect := range []string{migrations.MySQL, migrations.Postgres} {
		t.Run(dialect, func(t *testing.T) {
			fn(t, openSQLLogDB(t, dialect))
		})
	}
}

func openSQLLogDB(t *testing.T, dialect string) sqlLogDB {
	t.Helper()
	var d sqlLogDB
	var err error
	if dialect == migrations.MySQL {
		d = sqlLogDB{dialect: dialect, table: "imago_xa_decisions", dsn: testenv.MySQLDSN(t)}
		d.db, err = OpenMySQLDB(d.dsn)
	} else {
		d = sqlLogDB{dialect: dialect, table: "imago.xa_decisions", dsn: testenv.PostgresDSN(t)}
		d.db, err = sql.Open("pgx", d.dsn)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.db.Close() })
	return d
}

// testClock is a settable clock.
type testClock struct{ ns atomic.Int64 }

func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.ns.Store(t.UnixNano())
	return c
}
func (c *testClock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

type sqlLogOpts struct {
	now          func() time.Time
	elapsed      func() time.Duration // nil: the monotonic reading of now
	sweepEvery   time.Duration
	onSync       func(time.Duration)
	writeTimeout time.Duration // 0: 30s
}

func openSQLLog(t *testing.T, d sqlLogDB, node string, o sqlLogOpts) (*sqlDecisionLog, []record) {
	t.Helper()
	if o.now == nil {
		o.now = time.Now
	}
	if o.writeTimeout == 0 {
		o.writeTimeout = 30 * time.Second
	}
	l, recs, err := openSQLDecisionLog(context.Background(), sqlLogConfig{
		db: d.db, dialect: d.dialect, node: node, retention: time.Hour, writeTimeout: o.writeTimeout,
		sweepEvery: o.sweepEvery, now: o.now, elapsed: o.elapsed, onSync: o.onSync, log: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.close() })
	t.Cleanup(func() {
		// The shared table keeps no row of a test node.
		d.db.Exec("DELETE FROM "+d.table+" WHERE node_id = "+d.ph(1), node)
	})
	return l, recs
}

// nodeRecord is a record of node's transaction i.
func nodeRecord(node string, i int, st Status) record {
	r := record{Kind: recCommit, Status: st, Gtrid: fmt.Sprintf("%s%024x", node, i), ClientID: fmt.Sprintf("client-%d", i),
		Created: time.Unix(1700000000, 123456789), Decided: time.Unix(1700000001, 5000), Deadline: time.Unix(1700000030, 0),
		Code: "c", Message: "m",
		Branches: []recBranch{{Resource: "wallet", State: BranchPrepared, CommitSent: true}, {Resource: "broker", State: BranchReadOnly}}}
	if st.Final() {
		r.Kind, r.Finished = recDone, time.Unix(1700000002, 0)
	}
	return r
}

func byGtrid(recs []record) map[string]record {
	m := map[string]record{}
	for _, r := range recs {
		if _, dup := m[r.Gtrid]; dup {
			panic("two records of " + r.Gtrid)
		}
		m[r.Gtrid] = r
	}
	return m
}

func sameRecord(a, b record) bool {
	return fmt.Sprintf("%+v", appendRecord(nil, &a)) == fmt.Sprintf("%+v", appendRecord(nil, &b))
}

// blockRow locks node's row of gtrid from another session (it must exist) until the
// returned release is called: the log's next write of that row waits for it.
func blockRow(t *testing.T, d sqlLogDB, node, gtrid string) (release func()) {
	t.Helper()
	tx, err := d.db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	var g string
	if err := tx.QueryRow("SELECT gtrid FROM "+d.table+" WHERE node_id = "+d.ph(1)+" AND gtrid = "+d.ph(2)+" FOR UPDATE", node, gtrid).Scan(&g); err != nil {
		tx.Rollback()
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { tx.Rollback() }) }
	t.Cleanup(release)
	return release
}

// writerSession returns the server session id (MySQL connection id, PostgreSQL backend pid)
// of l's writer, which writes on a session of its own once it wrote. Call it while l is idle.
func writerSession(t *testing.T, l *sqlDecisionLog) int64 {
	t.Helper()
	q := "SELECT CONNECTION_ID()"
	if l.cfg.dialect == migrations.Postgres {
		q = "SELECT pg_backend_pid()"
	}
	if l.conn == nil {
		t.Fatal("the log has not written yet: no writer session")
	}
	var id int64
	if err := l.conn.QueryRowContext(context.Background(), q).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

// writing reports whether session is running a write to the decision table (seen from
// admin): with the row locked, it stays there.
func writing(t *testing.T, admin sqlLogDB, session int64) bool {
	t.Helper()
	var q string
	if admin.dialect == migrations.Postgres {
		q = "SELECT coalesce(query, '') FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND wait_event_type = 'Lock'"
	} else {
		q = "SELECT COALESCE(info, '') FROM information_schema.processlist WHERE id = ?"
	}
	var query string
	err := admin.db.QueryRow(q, session).Scan(&query)
	if errors.Is(err, sql.ErrNoRows) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(query, "INSERT INTO "+admin.table)
}

// Records written async and sync come back at reopen, the last one per transaction; a
// batch that holds several records of one transaction writes the last; waiters queued
// during a write share the next one; another node's rows are not returned.
func TestSQLDecisionLogReopen(t *testing.T) {
	eachSQLLogDB(t, func(t *testing.T, d sqlLogDB) {
		ctx := context.Background()
		node, other := newNode(t), newNode(t)
		var writes atomic.Int64
		l, recs := openSQLLog(t, d, node, sqlLogOpts{onSync: func(time.Duration) { writes.Add(1) }})
		if len(recs) != 0 {
			t.Fatalf("a new node has %d records", len(recs))
		}
		admin := openSQLLogDB(t, d.dialect)
		lo, _ := openSQLLog(t, admin, other, sqlLogOpts{})
		if err := lo.appendSync(ctx, nodeRecord(other, 1, StatusCommitting)); err != nil {
			t.Fatal(err)
		}

		x := nodeRecord(node, 1, StatusPreparing)
		x.Kind = recPreparing
		if err := l.append(x); err != nil {
			t.Fatal(err)
		}
		if err := l.appendSync(ctx, nodeRecord(node, 1, StatusCommitting)); err != nil {
			t.Fatal(err)
		}

		// Hold x's row: the next write of it waits, and everything queued meanwhile goes
		// into the following write, several versions of x among them.
		session := writerSession(t, l)
		release := blockRow(t, admin, node, x.Gtrid)
		blocked := make(chan error, 1)
		go func() {
			r := nodeRecord(node, 1, StatusCommitting)
			r.Message = "v1"
			blocked <- l.appendSync(ctx, r)
		}()
		waitFor(t, "the write to wait for the row lock", func() bool { return writing(t, admin, session) })
		before := writes.Load()
		for v := 2; v <= 4; v++ {
			r := nodeRecord(node, 1, StatusCommitting)
			r.Message = fmt.Sprint("v", v)
			if err := l.append(r); err != nil {
				t.Fatal(err)
			}
		}
		const waiters = 50
		errs := make(chan error, waiters)
		for i := 0; i < waiters; i++ {
			go func() { errs <- l.appendSync(ctx, nodeRecord(node, 100+i, StatusCommitting)) }()
		}
		waitFor(t, "the waiters to queue", func() bool { return len(l.reqs) == 3+waiters })
		release()
		if err := <-blocked; err != nil {
			t.Fatal(err)
		}
		for i := 0; i < waiters; i++ {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		// The held write, then one for everything queued behind it.
		if n := writes.Load() - before; n != 2 {
			t.Errorf("%d records queued during a write took %d writes, want 1 (group commit)", 3+waiters, n-1)
		}
		done := nodeRecord(node, 2, StatusCommitted)
		done.By, done.Finished = "dba-alice", time.Now() // within the retention
		if err := l.appendSync(ctx, done); err != nil {
			t.Fatal(err)
		}
		if err := l.close(); err != nil {
			t.Fatal(err)
		}

		// The readable columns.
		var status, client, by string
		var finished sql.NullString
		q := "SELECT status, client_id, decided_by, finished_at FROM " + d.table + " WHERE node_id = " + d.ph(1) + " AND gtrid = " + d.ph(2)
		if d.dialect == migrations.Postgres {
			q = "SELECT status, client_id, decided_by, to_char(finished_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM " + d.table + " WHERE node_id = $1 AND gtrid = $2"
		}
		if err := admin.db.QueryRow(q, node, done.Gtrid).Scan(&status, &client, &by, &finished); err != nil {
			t.Fatal(err)
		}
		if want := done.Finished.UTC().Format("2006-01-02 15:04:05.000000"); status != "committed" || client != done.ClientID || by != "dba-alice" || finished.String != want {
			t.Errorf("readable columns: status %q client %q by %q finished %q; want committed %q dba-alice %q", status, client, by, finished.String, done.ClientID, want)
		}

		l2, recs := openSQLLog(t, admin, node, sqlLogOpts{})
		defer l2.close()
		got := byGtrid(recs)
		if len(got) != 2+waiters {
			t.Fatalf("%d records back, want %d", len(got), 2+waiters)
		}
		if r := got[x.Gtrid]; r.Message != "v4" || r.Status != StatusCommitting {
			t.Errorf("transaction 1 came back as %q %s, want its last record v4 committing", r.Message, r.Status)
		}
		if r := got[done.Gtrid]; !sameRecord(r, done) {
			t.Errorf("record changed on its way:\n got %+v\nwant %+v", r, done)
		}
		for _, r := range recs {
			if !strings.HasPrefix(r.Gtrid, node) {
				t.Errorf("record of another node returned: %s", r.Gtrid)
			}
		}
	})
}

// A write that fails (its session killed by the server while it waits) fails its waiter,
// the waiters queued behind it, and every later append; nothing of it is in the table.
func TestSQLDecisionLogWriteFailure(t *testing.T) {
	eachSQLLogDB(t, func(t *testing.T, d sqlLogDB) {
		ctx := context.Background()
		node := newNode(t)
		admin := openSQLLogDB(t, d.dialect) // the log's own pool loses a connection
		l, _ := openSQLLog(t, d, node, sqlLogOpts{})
		first := nodeRecord(node, 1, StatusCommitting)
		if err := l.appendSync(ctx, first); err != nil {
			t.Fatal(err)
		}
		session := writerSession(t, l)
		release := blockRow(t, admin, node, first.Gtrid)
		const waiters = 5
		errs := make(chan error, waiters+1)
		go func() {
			r := nodeRecord(node, 1, StatusCommitted)
			errs <- l.appendSync(ctx, r)
		}()
		waitFor(t, "the write to wait for the row lock", func() bool { return writing(t, admin, session) })
		for i := 0; i < waiters; i++ {
			go func() { errs <- l.appendSync(ctx, nodeRecord(node, 10+i, StatusCommitting)) }()
		}
		waitFor(t, "the waiters to queue", func() bool { return len(l.reqs) == waiters })
		kill := "KILL " + fmt.Sprint(session)
		if d.dialect == migrations.Postgres {
			kill = fmt.Sprintf("SELECT pg_terminate_backend(%d)", session)
		}
		if _, err := admin.db.Exec(kill); err != nil {
			t.Fatal(err)
		}
		// The write in flight has an unknown outcome; those queued behind it were refused, so
		// certainly not written. All carry the one error that failed the log.
		var firstErr error
		unknown := 0
		for i := 0; i < waiters+1; i++ {
			err := <-errs
			if err == nil {
				t.Fatal("a write on a killed session succeeded")
			}
			if !errors.Is(err, errNotWritten) {
				unknown++
			}
			cause := strings.TrimPrefix(err.Error(), errNotWritten.Error()+": ")
			if firstErr == nil {
				firstErr = errors.New(cause)
			} else if cause != firstErr.Error() {
				t.Errorf("waiters got different errors: %v / %v", firstErr, err)
			}
		}
		if unknown != 1 {
			t.Errorf("%d waiters were told their outcome is unknown, want 1 (the write in flight)", unknown)
		}
		if !strings.Contains(firstErr.Error(), "write decision log table") {
			t.Errorf("the error does not say what failed: %v", firstErr)
		}
		release()
		// Failed for good, even though the database is fine again.
		if err := l.append(nodeRecord(node, 20, StatusCommitting)); err == nil {
			t.Error("append after a failed write succeeded")
		}
		if err := l.appendSync(ctx, nodeRecord(node, 21, StatusCommitting)); err == nil {
			t.Error("appendSync after a failed write succeeded")
		}
		l.close()
		_, recs := openSQLLog(t, admin, node, sqlLogOpts{})
		got := byGtrid(recs)
		if len(got) != 1 || got[first.Gtrid].Status != StatusCommitting {
			t.Fatalf("after the failure the table holds %d records (%v), want only the first, committing", len(got), got[first.Gtrid].Status)
		}
	})
}

// Finished transactions leave the table once past the retention by both clocks (the file log's
// rule), at open and periodically; unfinished ones stay whatever their age.
func TestSQLDecisionLogRetention(t *testing.T) {
	eachSQLLogDB(t, func(t *testing.T, d sqlLogDB) {
		ctx := context.Background()
		node := newNode(t)
		k := &steppedClock{wall: time.Unix(1700000000, 0)}
		l, _ := openSQLLog(t, d, node, sqlLogOpts{now: k.now, elapsed: k.elapsed, sweepEvery: 20 * time.Millisecond})
		at := func(i int, st Status) record {
			r := nodeRecord(node, i, st)
			r.Created = k.now().Add(-48 * time.Hour)
			if st.Final() {
				r.Finished = k.now()
			}
			return r
		}
		kept := []record{at(3, StatusCommitting), at(4, StatusPreparing), at(5, StatusInDoubt), at(6, StatusRollingBack)}
		for _, r := range kept {
			if err := l.appendSync(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		old := at(1, StatusCommitted)
		if err := l.appendSync(ctx, old); err != nil {
			t.Fatal(err)
		}
		k.advance(50*time.Minute, 50*time.Minute)
		recent := at(2, StatusRolledBack)
		if err := l.appendSync(ctx, recent); err != nil {
			t.Fatal(err)
		}
		k.advance(10*time.Minute, 10*time.Minute) // old: an hour ago; recent: ten minutes
		rows := func() map[string]bool {
			m := map[string]bool{}
			rs, err := d.db.Query("SELECT gtrid FROM "+d.table+" WHERE node_id = "+d.ph(1), node)
			if err != nil {
				t.Fatal(err)
			}
			defer rs.Close()
			for rs.Next() {
				var g string
				if err := rs.Scan(&g); err != nil {
					t.Fatal(err)
				}
				m[g] = true
			}
			return m
		}
		waitFor(t, "the old finished transaction to be deleted", func() bool { return !rows()[old.Gtrid] })
		if m := rows(); len(m) != 1+len(kept) || !m[recent.Gtrid] {
			t.Fatalf("after the first sweep: %v", m)
		}
		k.advance(time.Hour, time.Hour)
		waitFor(t, "the second finished transaction to be deleted", func() bool { return !rows()[recent.Gtrid] })
		for _, r := range kept {
			if !rows()[r.Gtrid] {
				t.Errorf("unfinished %s (%s) deleted", r.Gtrid, r.Status)
			}
		}
		// At open: a transaction finished just before the log closed is as old as the log's
		// newest record says, not as the wall clock says after the restart (a clock stepped
		// forward while nothing ran is no time passed: openAge); time that passed while the log
		// was written counts, so one that much older than the newest record goes at the open.
		last := at(7, StatusCommitted)
		if err := l.appendSync(ctx, last); err != nil {
			t.Fatal(err)
		}
		l.close()
		k.advance(2*time.Hour, 0)
		l2, recs := openSQLLog(t, d, node, sqlLogOpts{now: k.now, elapsed: k.elapsed, sweepEvery: time.Hour})
		if _, ok := byGtrid(recs)[last.Gtrid]; !ok || !rows()[last.Gtrid] {
			t.Error("a transaction finished just before the log closed was dropped at open because the wall clock stepped forward meanwhile")
		}
		k.advance(2*time.Hour, 2*time.Hour)
		fresh := at(8, StatusCommitting) // written two hours after last finished
		fresh.Created = k.now()
		if err := l2.appendSync(ctx, fresh); err != nil {
			t.Fatal(err)
		}
		l2.close()
		l3, recs := openSQLLog(t, d, node, sqlLogOpts{now: k.now, elapsed: k.elapsed, sweepEvery: time.Hour})
		defer l3.close()
		got := byGtrid(recs)
		if _, ok := got[last.Gtrid]; ok || rows()[last.Gtrid] {
			t.Error("a finished transaction past the retention, by the log's own newest record, survived the open")
		}
		if len(got) != len(kept)+1 {
			t.Errorf("%d records at open, want the %d unfinished", len(got), len(kept)+1)
		}
	})
}

// TestRecoveryCommitsDecidedAfterCrash with the decision log in a table: the decision is a
// row, the process dies, a new coordinator of the same node and database commits the branches.
func TestRecoveryCommitsDecidedAfterCrashSQLLog(t *testing.T) {
	for _, dialect := range []string{migrations.MySQL, migrations.Postgres} {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t)
			table := e.tables(map[string]int64{"a": 100, "b": 0})
			node := newNode(t)
			o := e.options(node)
			o.Grace = time.Hour // only the decision may commit these
			o.DecisionDB, o.DecisionDialect = e.pg, dialect
			d := sqlLogDB{dialect: dialect, db: e.pg, table: "imago.xa_decisions"}
			if dialect == migrations.MySQL {
				o.DecisionDB, d.db, d.table = e.my, e.my, "imago_xa_decisions"
			}
			t.Cleanup(func() { d.db.Exec("DELETE FROM "+d.table+" WHERE node_id = "+d.ph(1), node) })
			c, err := Open(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			c.hookAfterDecision = func(string) error { return errSimulatedCrash }
			ctx := context.Background()
			topic := "xat." + e.suffix
			id := "crash-" + e.suffix
			in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
				return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
			})
			if !errors.Is(err, errSimulatedCrash) {
				t.Fatalf("%+v %v", in, err)
			}
			waitFor(t, "the branches to be listed", func() bool { return len(e.prepared(node)) == 3 })
			c.Close()
			status := func() string {
				var s string
				q := "SELECT status FROM " + d.table + " WHERE node_id = " + d.ph(1) + " AND client_id = " + d.ph(2)
				if err := d.db.QueryRow(q, node, id).Scan(&s); err != nil {
					t.Fatal(err)
				}
				return s
			}
			if s := status(); s != "committing" {
				t.Fatalf("the decision row says %q, want committing", s)
			}
			if _, err := os.Stat(filepath.Join(o.Dir, logFileName)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a decision log file exists with the table log: %v", err)
			}
			if e.balance(e.my, table, "a") != 100 {
				t.Fatal("committed before the decision was applied")
			}
			c2 := e.open(o)
			waitFor(t, "recovery to commit", func() bool {
				got, err := c2.Get(id)
				return err == nil && got.Status == StatusCommitted
			})
			if e.balance(e.my, table, "a") != 60 || e.balance(e.pg, table, "b") != 40 || len(e.messages(topic)) != 1 {
				t.Fatal("recovery did not commit every branch")
			}
			if p := e.prepared(node); len(p) != 0 {
				t.Fatalf("left prepared: %v", p)
			}
			waitFor(t, "the row to say committed", func() bool { return status() == "committed" })
			// The repeat of the client id after the restart returns the commit.
			_, err = c2.Run(ctx, BeginOptions{ID: id}, func(context.Context, *GlobalTx) error { return nil })
			var dup *DuplicateError
			if !errors.As(err, &dup) || dup.Info.Status != StatusCommitted {
				t.Fatalf("repeat after restart: %v", err)
			}
		})
	}
}

// A coordinator does not move to a table while its file log holds unfinished transactions:
// their decisions would be forgotten.
func TestSQLLogRefusesUnfinishedFileLog(t *testing.T) {
	d := openSQLLogDB(t, migrations.Postgres)
	o := NewOptions(t.TempDir())
	o.NodeID = newNode(t)
	o.Logger = quietLogger()
	fl, _, err := openDecisionLog(o.Dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := fl.appendSync(context.Background(), nodeRecord(o.NodeID, 1, StatusCommitting)); err != nil {
		t.Fatal(err)
	}
	fl.close()
	o.DecisionDB, o.DecisionDialect = d.db, "postgres"
	if c, err := Open(context.Background(), o); err == nil || !strings.Contains(err.Error(), "1 unfinished") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("Open with a file log holding a committing transaction: %v", err)
	}
	o.DecisionDialect = "oracle"
	fl, _, _ = openDecisionLog(o.Dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
	fl.appendSync(context.Background(), nodeRecord(o.NodeID, 1, StatusCommitted))
	fl.close()
	if _, err := Open(context.Background(), o); err == nil || !strings.Contains(err.Error(), `"oracle"`) {
		t.Fatalf("Open with dialect oracle: %v", err)
	}
}
