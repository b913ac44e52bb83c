package xa

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"net"
	rtmetrics "runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/imagomq/imago/internal/testenv"
)

// earlyTx runs a transaction that debits "a" by 10 on MariaDB (Exec) and credits it on
// PostgreSQL with ExecPrepare, then calls more (nil: nothing) before Commit.
func earlyTx(t *testing.T, c *Coordinator, table string, more func(ctx context.Context, tx *GlobalTx) error) (TxInfo, error) {
	t.Helper()
	return c.Run(context.Background(), BeginOptions{}, func(ctx context.Context, tx *GlobalTx) error {
		w, err := tx.Enlist(ctx, "wallet")
		if err != nil {
			return err
		}
		if _, err := w.Exec(ctx, "UPDATE "+table+" SET balance = balance - ? WHERE id = ?", 10, "a"); err != nil {
			return err
		}
		l, err := tx.Enlist(ctx, "ledger")
		if err != nil {
			return err
		}
		if _, err := l.ExecPrepare(ctx, "UPDATE "+table+" SET balance = balance + $1 WHERE id = $2", 10, "a"); err != nil {
			return err
		}
		if more != nil {
			return more(ctx, tx)
		}
		return nil
	})
}

// ExecPrepare prepares the PostgreSQL branch with its statement: the branch is listed as
// prepared before Commit, and Commit commits both branches.
func TestExecPreparePostgresCommits(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100})
	node := newNode(t)
	e.rollbackLeftovers(node, []Resource{MySQL("wallet", e.my), Postgres("ledger", e.pg)})
	c := e.open(e.options(node))
	var listed []string
	in, err := earlyTx(t, c, table, func(ctx context.Context, tx *GlobalTx) error {
		listed = e.prepared(node)
		return nil
	})
	if err != nil || in.Status != StatusCommitted {
		t.Fatalf("commit: %+v %v", in, err)
	}
	if len(listed) != 1 || !strings.HasPrefix(listed[0], "ledger:") {
		t.Fatalf("prepared before Commit: %v, want the ledger branch only (prepared with its statement)", listed)
	}
	if my, pg := e.balance(e.my, table, "a"), e.balance(e.pg, table, "a"); my != 90 || pg != 110 {
		t.Fatalf("balances MariaDB %d PostgreSQL %d, want 90 and 110", my, pg)
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("left prepared: %v", p)
	}
}

// A transaction that fails after a branch was prepared early rolls it back (ROLLBACK
// PREPARED, after a durable rollback decision): nothing changes, nothing stays prepared, and the
// branch takes no statement after ExecPrepare.
func TestExecPrepareRollsBack(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100})
	node := newNode(t)
	e.rollbackLeftovers(node, []Resource{MySQL("wallet", e.my), Postgres("ledger", e.pg)})
	c := e.open(e.options(node))
	in, err := earlyTx(t, c, table, func(ctx context.Context, tx *GlobalTx) error {
		l, err := tx.Enlist(ctx, "ledger")
		if err != nil {
			return err
		}
		_, err = l.Exec(ctx, "UPDATE "+table+" SET balance = 0 WHERE id = $1", "a")
		if XACode(err) != XAERProto {
			t.Errorf("Exec after ExecPrepare: %v, want XAER_PROTO", err)
		}
		return errors.New("a later step failed")
	})
	if !errors.Is(err, ErrRolledBack) || in.Status != StatusRolledBack {
		t.Fatalf("rollback: %+v %v", in, err)
	}
	if my, pg := e.balance(e.my, table, "a"), e.balance(e.pg, table, "a"); my != 100 || pg != 100 {
		t.Fatalf("balances MariaDB %d PostgreSQL %d, want 100 and 100", my, pg)
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("left prepared: %v", p)
	}
	// The rollback decision was recorded before the prepared branch was rolled back.
	if err := c.dlog.appendSync(context.Background(), record{Kind: recCommit, Status: StatusCommitting, Gtrid: in.Gtrid}); !errors.Is(err, ErrConflictingDecision) {
		t.Fatalf("a commit after the rollback: %v, want ErrConflictingDecision (the rollback decision is in the log)", err)
	}
}

// A statement that fails in the pipeline prepares nothing (the server skips PREPARE
// TRANSACTION); the transaction rolls back. ExecPrepare on the only branch with work commits
// in two phases (a prepared branch cannot commit in one).
func TestExecPrepareFailedStatementAndOnlyBranch(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100})
	node := newNode(t)
	e.rollbackLeftovers(node, []Resource{MySQL("wallet", e.my), Postgres("ledger", e.pg)})
	c := e.open(e.options(node))
	in, err := c.Run(context.Background(), BeginOptions{}, func(ctx context.Context, tx *GlobalTx) error {
		l, err := tx.Enlist(ctx, "ledger")
		if err != nil {
			return err
		}
		_, err = l.ExecPrepare(ctx, "UPDATE "+table+" SET balance = balance / $1 WHERE id = $2", 0, "a")
		return err
	})
	if !errors.Is(err, ErrRolledBack) || in.Status != StatusRolledBack {
		t.Fatalf("division by zero: %+v %v, want rolled back", in, err)
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("a failed statement left a prepared branch: %v", p)
	}
	in, err = c.Run(context.Background(), BeginOptions{}, func(ctx context.Context, tx *GlobalTx) error {
		l, err := tx.Enlist(ctx, "ledger")
		if err != nil {
			return err
		}
		_, err = l.ExecPrepare(ctx, "UPDATE "+table+" SET balance = balance + $1 WHERE id = $2", 5, "a")
		return err
	})
	if err != nil || in.Status != StatusCommitted {
		t.Fatalf("one branch prepared early: %+v %v, want committed", in, err)
	}
	if pg := e.balance(e.pg, table, "a"); pg != 105 {
		t.Fatalf("PostgreSQL balance %d, want 105", pg)
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("left prepared: %v", p)
	}
}

// A crash after a branch was prepared early, before Commit: the "preparing" record was queued
// before the PREPARE, so the next start decides rollback at once and recovery rolls the branch
// back; nothing changes.
func TestExecPrepareCrashBeforeCommit(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100})
	node := newNode(t)
	e.rollbackLeftovers(node, []Resource{MySQL("wallet", e.my), Postgres("ledger", e.pg)})
	o := e.options(node)
	o.Grace = time.Hour // presumed abort would wait: only the restart's decision rolls back
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var gtrid string
	earlyTx(t, c, table, func(ctx context.Context, tx *GlobalTx) error {
		gtrid = tx.Gtrid()
		tx.abandon() // the crash: connections dropped, the PostgreSQL branch left prepared
		return errors.New("crashed")
	})
	if p := e.prepared(node); len(p) != 1 {
		t.Fatalf("after the crash: prepared %v, want the ledger branch", p)
	}
	c.Close()
	c2 := e.open(o)
	// The branch leaves the database's prepared list before recovery records the outcome: wait
	// for both.
	waitFor(t, "the prepared branch rolled back and the transaction recorded rolled back", func() bool {
		in, err := c2.Get(gtrid)
		return err == nil && in.Status == StatusRolledBack && len(e.prepared(node)) == 0
	})
	in, err := c2.Get(gtrid)
	if err != nil || in.Status != StatusRolledBack || in.Code != "coordinator_restarted" {
		t.Fatalf("after restart: %+v %v, want rolled_back, coordinator_restarted", in, err)
	}
	if my, pg := e.balance(e.my, table, "a"), e.balance(e.pg, table, "a"); my != 100 || pg != 100 {
		t.Fatalf("balances MariaDB %d PostgreSQL %d, want 100 and 100", my, pg)
	}
}

// countConn counts the writes to a database connection that are requests of a transaction
// (not the recovery scans' or the node lease's).
type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countConn) Write(b []byte) (int, error) {
	background := bytes.Contains(b, []byte("XA RECOVER")) || bytes.Contains(b, []byte("pg_prepared_xacts")) ||
		bytes.Contains(b, []byte("-- ping")) || len(b) == 5 && b[4] == 0x0e // MySQL COM_PING
	if !background {
		c.n.Add(1)
	}
	return c.Conn.Write(b)
}

var registerCountDial sync.Once

// The round trips of a global transaction with one statement on MariaDB, one on PostgreSQL
// (the last there, so ExecPrepare) and a message: MariaDB SET wait_timeout + XA START, the
// statement, XA END + XA PREPARE, XA COMMIT (4); PostgreSQL BEGIN + statement + PREPARE
// TRANSACTION, COMMIT PREPARED (2). Each request is one write on its connection. It also
// counts the goroutines the coordinator starts for one transaction.
func TestRoundTripsPerGlobalTransaction(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 1000})
	var myWrites, pgWrites atomic.Int64
	registerCountDial.Do(func() {
		mysql.RegisterDialContext("xacount", func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return countConn{c, countMy}, nil
		})
	})
	countMy = &myWrites
	mcfg, err := mysql.ParseDSN(testenv.MySQLDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	mcfg.Net = "xacount"
	my, err := OpenMySQLDB(mcfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer my.Close()
	pcfg, err := pgx.ParseConfig(testenv.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	pcfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return countConn{c, &pgWrites}, nil
	}
	pg := stdlib.OpenDB(*pcfg)
	defer pg.Close()
	node := newNode(t)
	o := e.options(node)
	o.Resources = []Resource{MySQL("wallet", my), Postgres("ledger", pg), Broker("broker", e.b)}
	o.RecoveryInterval = time.Hour
	c := e.open(o)
	if err := c.Recover(context.Background()); err != nil { // after the start's pass, if it runs
		t.Fatal(err)
	}
	run := func() {
		t.Helper()
		in, err := c.Run(context.Background(), BeginOptions{}, func(ctx context.Context, tx *GlobalTx) error {
			w, _ := tx.Enlist(ctx, "wallet")
			if _, err := w.Exec(ctx, "UPDATE "+table+" SET balance = balance - ? WHERE id = ?", 1, "a"); err != nil {
				return err
			}
			l, _ := tx.Enlist(ctx, "ledger")
			if _, err := l.ExecPrepare(ctx, "UPDATE "+table+" SET balance = balance + $1 WHERE id = $2", 1, "a"); err != nil {
				return err
			}
			return tx.Publish(ctx, msg("xat."+e.suffix, "k", `{}`))
		})
		if err != nil || in.Status != StatusCommitted {
			t.Fatalf("%+v %v", in, err)
		}
	}
	var pool sql.DBStats
	for range 3 { // version checks, statements prepared on the connections
		run()
	}
	pool = my.Stats()
	myWrites.Store(0)
	pgWrites.Store(0)
	g0 := goroutinesCreated()
	const n = 30 // a connection opened meanwhile (handshake writes) weighs little
	for range n {
		run()
	}
	goroutines := float64(goroutinesCreated()-g0) / n
	if my.Stats().OpenConnections != pool.OpenConnections {
		t.Logf("MariaDB pool opened connections meanwhile (%d → %d): counts include their set-up", pool.OpenConnections, my.Stats().OpenConnections)
	}
	gotMy, gotPg := float64(myWrites.Load())/n, float64(pgWrites.Load())/n
	t.Logf("round trips per global transaction: MariaDB %.1f, PostgreSQL %.1f; goroutines started %.1f", gotMy, gotPg, goroutines)
	// A connection the pool opens meanwhile adds its handshake's writes: half a round trip per
	// transaction is the margin (with the PREPARE sent apart, PostgreSQL takes 3).
	if gotMy >= 4.5 || gotPg >= 2.5 {
		t.Fatalf("round trips per global transaction: MariaDB %.1f (want 4), PostgreSQL %.1f (want 2)", gotMy, gotPg)
	}
	// With the file decision log the MariaDB and broker branches are prepared and all three
	// committed: each phase runs its last branch on the caller's goroutine, so one goroutine
	// for the prepares and two for the commits. A connection the pool opens meanwhile starts
	// one more (the driver's watcher), a thirtieth per transaction.
	if goroutines >= 3.5 {
		t.Fatalf("goroutines started per global transaction: %.1f, want 3 (1 in phase 1, 2 in phase 2)", goroutines)
	}
}

// countMy is the counter of the "xacount" MySQL dialer (registered once per process).
var countMy *atomic.Int64

// A statement ExecPrepare keeps prepared on a connection that can no longer run (its result
// type changed under it: "cached plan must not change result type") fails its transaction
// once; the connection is dropped with it, so the next transaction runs.
func TestExecPrepareStaleStatement(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100})
	node := newNode(t)
	e.rollbackLeftovers(node, []Resource{MySQL("wallet", e.my), Postgres("ledger", e.pg)})
	e.pg.SetMaxOpenConns(2) // the node lease holds one: every branch on the other
	c := e.open(e.options(node))
	run := func() (TxInfo, error) {
		return c.Run(context.Background(), BeginOptions{}, func(ctx context.Context, tx *GlobalTx) error {
			w, _ := tx.Enlist(ctx, "wallet")
			if _, err := w.Exec(ctx, "UPDATE "+table+" SET balance = balance - ? WHERE id = ?", 1, "a"); err != nil {
				return err
			}
			l, _ := tx.Enlist(ctx, "ledger")
			_, err := l.ExecPrepare(ctx, "UPDATE "+table+" SET balance = balance + $1 WHERE id = $2 RETURNING *", 1, "a")
			return err
		})
	}
	if in, err := run(); err != nil {
		t.Fatalf("first: %+v %v", in, err)
	}
	if _, err := e.pg.Exec("ALTER TABLE " + table + " ADD COLUMN note TEXT"); err != nil {
		t.Fatal(err)
	}
	if in, err := run(); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("with the result type changed: %+v %v, want rolled back", in, err)
	}
	if in, err := run(); err != nil || in.Status != StatusCommitted {
		t.Fatalf("after: %+v %v, want committed (the connection with the stale statement dropped)", in, err)
	}
	if my, pg := e.balance(e.my, table, "a"), e.balance(e.pg, table, "a"); my != 98 || pg != 102 {
		t.Fatalf("balances MariaDB %d PostgreSQL %d, want 98 and 102", my, pg)
	}
}

// goroutinesCreated is the count of goroutines this process has started.
func goroutinesCreated() uint64 {
	s := []rtmetrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}
