package xa

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/privatedb"
)

// A database that runs out of disk in the middle of the protocol: a private PostgreSQL whose
// data directory is on a small tmpfs (privatedb.OnTmpfs; root only), filled at a chosen moment.
// PostgreSQL cannot write WAL without room for its next segment: the session that needs it
// PANICs, every session ends, and the crash recovery that follows cannot finish either, so the
// server shuts down until the space is back. MariaDB needs no space to prepare or commit an XA
// branch (its redo log is allocated ahead, and the binlog is off here): its full disk shows as
// a statement's "table is full", an ordinary rollback.

// pgDiskFull fills the disk of p and moves its WAL on to a segment there is no room to create:
// the next WAL write of any session (a PREPARE TRANSACTION, a COMMIT PREPARED, a commit)
// fails, and PostgreSQL PANICs. The returned function waits until the server is down, frees
// the space and starts it again.
func pgDiskFull(t *testing.T, p *privatedb.Server) (restore func()) {
	t.Helper()
	free := p.Fill(0)
	admin, err := sql.Open(p.Driver(), p.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	// The switch record fits in the current segment; the record after it needs the next one.
	if _, err := admin.Exec("SELECT pg_switch_wal()"); err != nil {
		t.Errorf("pg_switch_wal: %v", err)
	}
	return func() {
		t.Helper()
		waitFor(t, "PostgreSQL to shut down for lack of space", p.Exited)
		if log := p.Log(); !strings.Contains(log, "PANIC") || !strings.Contains(log, "No space left on device") {
			t.Fatalf("PostgreSQL shut down, but not for lack of space:\n%s", log)
		}
		for _, line := range strings.Split(p.Log(), "\n") {
			if strings.Contains(line, "PANIC") || strings.Contains(line, "STATEMENT") {
				t.Log(line)
			}
		}
		free()
		p.Start()
	}
}

// TestPostgresDiskFullInTwoPhaseCommit runs the ledger's PostgreSQL out of disk right before
// its branch's PREPARE TRANSACTION, and right before its COMMIT PREPARED once the commit
// decision is durable. Out of space at prepare, the transaction rolls back: the client is told
// so, and recovery rolls the MariaDB branch back. Out of space at phase 2, the client is told
// the commit decision (committing): once the server is back with room, recovery commits the
// ledger's branch. Either way the transfer is applied everywhere or nowhere, with its message
// once or never, and nothing is left prepared.
func TestPostgresDiskFullInTwoPhaseCommit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		commit bool // the disk fills before phase 2 (else before the prepare)
	}{
		{"prepare", false},
		{"commit-prepared", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			p := privatedb.Postgres(t, privatedb.OnTmpfs("64m"))
			e.pg = p.DB()
			table := e.tables(map[string]int64{"a": 100, "b": 0})
			topic := "xat." + e.suffix
			node := newNode(t)
			o := e.options(node)
			o.Grace = time.Hour // only a decision may finish these branches
			o.PhaseTimeout = 5 * time.Second
			o.RecoveryInterval = time.Hour // passes run when kicked and when the test calls Recover
			ledger := &hookRM{resourceManager: Postgres("ledger", e.pg).rm()}
			o.Resources = []Resource{MySQL("wallet", e.my), ledger, Broker("broker", e.b)}
			e.rollbackLeftovers(node, o.Resources)
			c := e.open(o)

			var restore func()
			full := func() { restore = pgDiskFull(t, p) }
			if tc.commit {
				ledger.beforeCommit = full
			} else {
				ledger.beforePrepare = full
			}
			ctx := context.Background()
			id := "diskfull-" + e.suffix
			in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
				return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
			})
			ledger.beforeCommit, ledger.beforePrepare = nil, nil
			if restore == nil {
				t.Fatalf("the ledger's branch never reached its %s: %s %v", map[bool]string{false: "prepare", true: "phase 2"}[tc.commit], in.Status, err)
			}
			want := StatusRolledBack
			if tc.commit {
				want = StatusCommitted
				if err != nil || in.Status != StatusCommitting {
					t.Fatalf("out of space after the commit decision: want committing and no error, got %s %v", in.Status, err)
				}
			} else if !errors.Is(err, ErrRolledBack) || in.Status != StatusRollingBack && in.Status != StatusRolledBack {
				t.Fatalf("out of space at prepare: want a rollback, got %s %v", in.Status, err)
			}
			t.Logf("answer: %s %v", in.Status, err)
			restore()
			waitFor(t, "the outcome to be applied everywhere", func() bool {
				c.Recover(ctx)
				got, err := c.Get(id)
				return err == nil && got.Status == want && len(e.prepared(node)) == 0
			})
			e.transferApplied(t, table, topic, want)
		})
	}
}

// TestPostgresDecisionTableDiskFull keeps the decision log in a table of a private PostgreSQL
// (Options.DecisionDB) and runs that database out of disk once every branch is prepared and
// the transaction's "preparing" record is in the table: the commit decision's insert dies
// with the server, its outcome unknown. The client is told exactly that (in doubt, the
// decision unknown, with the branches left prepared), the log fails (Ping reports it, nothing
// else prepares) and, once the database is back and the coordinator restarted, recovery finds
// no commit decision and rolls every branch back: the transfer applied nowhere.
func TestPostgresDecisionTableDiskFull(t *testing.T) {
	e := newEnv(t)
	p := privatedb.Postgres(t, privatedb.OnTmpfs("64m"))
	decisions := p.DB()
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	topic := "xat." + e.suffix
	node := newNode(t)
	o := e.options(node)
	o.DecisionDB, o.DecisionDialect = decisions, "postgres"
	o.Grace = time.Second
	o.PhaseTimeout = 3 * time.Second // also bounds a decision write
	o.RecoveryInterval = time.Hour   // passes run when kicked and when the test calls Recover
	e.rollbackLeftovers(node, o.Resources)
	c := e.open(o)

	var restore func()
	c.hookAfterPrepare = func(gtrid string) error {
		waitFor(t, "the preparing record to be in the table", func() bool {
			var n int
			err := decisions.QueryRow("SELECT count(*) FROM imago.xa_decisions WHERE gtrid = $1", gtrid).Scan(&n)
			return err == nil && n == 1
		})
		restore = pgDiskFull(t, p)
		return nil
	}
	ctx := context.Background()
	id := "diskfull-decision-" + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
	})
	c.hookAfterPrepare = nil
	t.Logf("answer: %s %s %v", in.Status, in.Code, err)
	if restore == nil {
		t.Fatalf("the transaction never prepared: %s %v", in.Status, err)
	}
	if !errors.Is(err, ErrInDoubt) || !in.DecisionUnknown() {
		t.Fatalf("the commit decision's write died with the server: want in doubt with the decision unknown, got %s (%s) %v", in.Status, in.Code, err)
	}
	if err := c.Ping(ctx); !errors.Is(err, ErrDecisionLogFailed) {
		t.Errorf("Ping after a decision write of unknown outcome: %v, want %v", err, ErrDecisionLogFailed)
	}
	if a, b := e.balance(e.my, table, "a"), e.balance(e.pg, table, "b"); a != 100 || b != 0 {
		t.Fatalf("before any decision is known: wallet a=%d, ledger b=%d, want nothing applied", a, b)
	}
	restore()
	c.Close()
	c = e.open(o)
	waitFor(t, "recovery to roll the transaction back everywhere", func() bool {
		c.Recover(ctx)
		got, err := c.Get(id)
		return err == nil && got.Status == StatusRolledBack && len(e.prepared(node)) == 0
	})
	if a, b, m := e.balance(e.my, table, "a"), e.balance(e.pg, table, "b"), len(e.messages(topic)); a != 100 || b != 0 || m != 0 {
		t.Fatalf("rolled back: wallet a=%d, ledger b=%d, %d messages", a, b, m)
	}
}

// TestPostgresDecisionDurableBeforePanic: the commit decision's insert PANICs after its commit
// is durable (panicAfterCommit: the disk fills while another session's WAL needs a new
// segment). The client is told the decision is unknown (in doubt), not a rollback; once the
// database is back and the coordinator restarted, recovery reads the commit decision and
// commits every branch: the transfer applied everywhere, its message once.
func TestPostgresDecisionDurableBeforePanic(t *testing.T) {
	e := newEnv(t)
	p := privatedb.Postgres(t, commitDelayed...)
	decisions := p.DB()
	decisions.SetMaxIdleConns(0) // no session kept across the server's restart
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	topic := "xat." + e.suffix
	node := newNode(t)
	o := e.options(node)
	o.DecisionDB, o.DecisionDialect = decisions, "postgres"
	o.Grace = time.Hour // only the decision may finish these branches
	o.PhaseTimeout = 3 * time.Second
	o.RecoveryInterval = time.Hour // passes run when kicked and when the test calls Recover
	e.rollbackLeftovers(node, o.Resources)
	c := e.open(o)

	var free func()
	crossed := make(chan error, 1)
	c.hookAfterPrepare = func(gtrid string) error {
		waitFor(t, "the preparing record to be in the table", func() bool {
			var n int
			err := decisions.QueryRow("SELECT count(*) FROM imago.xa_decisions WHERE gtrid = $1", gtrid).Scan(&n)
			return err == nil && n == 1
		})
		var cross func() error
		cross, free = panicAfterCommit(t, p, "INSERT INTO imago.xa_decisions")
		go func() { crossed <- cross() }()
		return nil
	}
	ctx := context.Background()
	id := "panic-decision-" + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
	})
	c.hookAfterPrepare = nil
	t.Logf("answer: %s %s %v", in.Status, in.Code, err)
	if free == nil {
		t.Fatalf("the transaction never prepared: %s %v", in.Status, err)
	}
	if err := <-crossed; err != nil {
		t.Fatalf("the record past the segment's end: %v", err)
	}
	if !errors.Is(err, ErrInDoubt) || !in.DecisionUnknown() {
		t.Errorf("the commit decision's insert PANICed: want in doubt with the decision unknown, got %s (%s) %v", in.Status, in.Code, err)
	}
	free()
	var status string
	if err := decisions.QueryRow("SELECT status FROM imago.xa_decisions WHERE gtrid = $1", in.Gtrid).Scan(&status); err != nil || status != string(StatusCommitting) {
		t.Fatalf("the scene did not happen (the commit decision was to be durable before the PANIC): %q %v", status, err)
	}
	c.Close()
	c = e.open(o)
	waitFor(t, "recovery to commit the transaction everywhere", func() bool {
		c.Recover(ctx)
		got, err := c.Get(id)
		return err == nil && got.Status == StatusCommitted && len(e.prepared(node)) == 0
	})
	if a, b, m := e.balance(e.my, table, "a"), e.balance(e.pg, table, "b"), len(e.messages(topic)); a != 60 || b != 40 || m != 1 {
		t.Fatalf("committed: wallet a=%d, ledger b=%d, %d messages", a, b, m)
	}
}

// TestMariaDBDiskFullInTwoPhaseCommit runs the wallet's MariaDB (binlog off, as Debian runs it)
// out of disk right before its branch's XA PREPARE, and right before its XA COMMIT: neither
// needs space (the redo log is allocated ahead), so the transfer commits. A branch statement
// that needs a page the table cannot get fails ("table is full", 1114) and the transaction
// rolls back with nothing applied and nothing left prepared.
func TestMariaDBDiskFullInTwoPhaseCommit(t *testing.T) {
	for _, when := range []string{"prepare", "commit", "statement"} {
		t.Run(when, func(t *testing.T) {
			e := newEnv(t)
			p, db := privateMariaDB(t, privatedb.OnTmpfs("128m"))
			e.my = db
			table := e.tables(map[string]int64{"a": 100, "b": 0})
			topic := "xat." + e.suffix
			node := newNode(t)
			o := e.options(node)
			o.Grace = time.Hour
			o.PhaseTimeout = 5 * time.Second
			wallet := &hookRM{resourceManager: MySQL("wallet", e.my).rm()}
			o.Resources = []Resource{wallet, Postgres("ledger", e.pg), Broker("broker", e.b)}
			e.rollbackLeftovers(node, o.Resources)
			c := e.open(o)
			var free func()
			full := func() { free = p.Fill(0) }
			switch when {
			case "prepare":
				wallet.beforePrepare = full
			case "commit":
				wallet.beforeCommit = full
			default:
				full()
			}
			ctx := context.Background()
			id := "diskfull-" + when + "-" + e.suffix
			in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
				if when == "statement" {
					w, _ := tx.Enlist(ctx, "wallet")
					for i := 0; ; i++ { // rows until the table needs a page
						if _, err := w.Exec(ctx, "INSERT INTO "+table+" VALUES (?, ?)", fmt.Sprintf("filler-%06d-%s", i, strings.Repeat("x", 40)), 0); err != nil {
							return err
						}
						if i > 100000 {
							return errors.New("the table took 100000 rows on a full disk")
						}
					}
				}
				return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
			})
			wallet.beforePrepare, wallet.beforeCommit = nil, nil
			t.Logf("answer: %s %v", in.Status, err)
			if free == nil {
				t.Fatal("the disk never filled")
			}
			want := StatusCommitted
			if when == "statement" {
				want = StatusRolledBack
				if !strings.Contains(fmt.Sprint(err), "1114") || in.Status != StatusRolledBack {
					t.Fatalf("a statement on a full table: want rolled back with the server's 1114, got %s %v", in.Status, err)
				}
			} else if err != nil || in.Status != StatusCommitted {
				t.Fatalf("out of disk at %s: want committed, got %s %v", when, in.Status, err)
			}
			free()
			waitFor(t, "the outcome to be applied everywhere", func() bool {
				c.Recover(ctx)
				got, err := c.Get(id)
				return err == nil && got.Status == want && len(e.prepared(node)) == 0
			})
			e.transferApplied(t, table, topic, want)
		})
	}
}

// TestPostgresSharedDecisionDatabaseDiskFull keeps the decision table in the ledger's own
// PostgreSQL (decision_log naming the resource) and runs it out of disk at the ledger's
// PREPARE TRANSACTION: the transaction rolls back. The PANIC ends every session of the server,
// the decision writer's too, idle at that moment (the transaction's "preparing" record is
// written before); the writes after the crash (this transaction's outcome) must not go on
// that dead session, whose error would leave their outcome unknown and fail the log until a
// restart of the coordinator. Once the space is back and the server
// started again, the next transaction commits, and Ping is fine, with no restart.
func TestPostgresSharedDecisionDatabaseDiskFull(t *testing.T) {
	e := newEnv(t)
	p := privatedb.Postgres(t, privatedb.OnTmpfs("64m"))
	e.pg = p.DB()
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	topic := "xat." + e.suffix
	node := newNode(t)
	o := e.options(node)
	o.DecisionDB, o.DecisionDialect = e.pg, "postgres"
	o.PhaseTimeout = 2 * time.Second
	ledger := &hookRM{resourceManager: Postgres("ledger", e.pg).rm()}
	o.Resources = []Resource{MySQL("wallet", e.my), ledger, Broker("broker", e.b)}
	e.rollbackLeftovers(node, o.Resources)
	c := e.open(o)
	ctx := context.Background()
	run := func(id string) (TxInfo, error) {
		return c.Run(ctx, BeginOptions{ID: id + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
			return transfer(ctx, tx, table, "a", "b", 10, msg(topic, "a", `{}`))
		})
	}
	if in, err := run("before-"); err != nil {
		t.Fatalf("before the disk fills: %s %v", in.Status, err)
	}
	var restore func()
	ledger.beforePrepare = func() {
		// The transaction's "preparing" record, queued before the prepares, is written first:
		// a write in flight when the server crashes has an unknown outcome, and fails the log.
		waitFor(t, "the preparing record to be in the table", func() bool {
			var n int
			err := e.pg.QueryRow("SELECT count(*) FROM imago.xa_decisions WHERE node_id = $1 AND status = 'preparing'", node).Scan(&n)
			return err == nil && n == 1
		})
		restore = pgDiskFull(t, p)
	}
	// The server is down (crashed, its crash recovery failed) before the coordinator writes
	// what follows the failed prepare: no write is in flight at the crash, whose outcome
	// would be unknown indeed.
	ledger.afterPrepare = func() { waitFor(t, "PostgreSQL to shut down for lack of space", p.Exited) }
	in, err := run("full-")
	ledger.beforePrepare, ledger.afterPrepare = nil, nil
	if !errors.Is(err, ErrRolledBack) || restore == nil {
		t.Fatalf("out of disk at the ledger's prepare: want a rollback, got %s %v", in.Status, err)
	}
	restore()
	if in, err := run("after-"); err != nil {
		t.Fatalf("once the server is back: %s (%s) %v", in.Status, in.Code, err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping once the server is back: %v", err)
	}
	waitFor(t, "the outcomes to be applied everywhere", func() bool {
		c.Recover(ctx)
		return len(e.prepared(node)) == 0
	})
	if a, b, m := e.balance(e.my, table, "a"), e.balance(e.pg, table, "b"), len(e.messages(topic)); a != 80 || b != 20 || m != 2 {
		t.Fatalf("two transfers of 10 committed, one rolled back: wallet a=%d, ledger b=%d, %d messages", a, b, m)
	}
}
