package xa

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
)

var errSimulatedCrash = errors.New("simulated crash")

// prepareOrphans prepares a branch of node's format on every resource, as a coordinator that
// then died would leave them, and returns the gtrid.
func prepareOrphans(t *testing.T, e *env, node, table string) string {
	t.Helper()
	ctx := context.Background()
	gtrid := node + uniq(t) + uniq(t)
	for _, r := range e.options(node).Resources {
		bc, err := r.rm().start(ctx, makeXid(gtrid, r.Name()), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		switch r.Driver() {
		case "mysql":
			_, err = bc.exec(ctx, "UPDATE "+table+" SET balance = 0 WHERE id = 'a'", nil)
		case "postgres":
			_, err = bc.exec(ctx, "UPDATE "+table+" SET balance = 0 WHERE id = 'a'", nil)
		case "broker":
			err = bc.publish([]broker.TxMessage{msg("xat."+e.suffix, "k", "orphan")})
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bc.prepare(ctx); err != nil {
			t.Fatal(err)
		}
		bc.release(true) // the coordinator's process dies: its connections drop
	}
	return gtrid
}

func TestPresumedAbortAfterGrace(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 10})
	node := newNode(t)
	prepareOrphans(t, e, node, table)
	waitFor(t, "the orphans to be listed", func() bool { return len(e.prepared(node)) == 3 })

	o := e.options(node)
	o.Grace = 1500 * time.Millisecond
	began := time.Now()
	c := e.open(o)
	waitFor(t, "presumed abort", func() bool { return len(e.prepared(node)) == 0 })
	if d := time.Since(began); d < o.Grace {
		t.Fatalf("orphans rolled back after %s, before the %s grace period", d, o.Grace)
	}
	if e.balance(e.my, table, "a") != 10 || e.balance(e.pg, table, "a") != 10 || len(e.messages("xat."+e.suffix)) != 0 {
		t.Fatal("presumed abort did not roll back")
	}
	_ = c
}

// A branch of another node is never touched.
func TestRecoveryIgnoresOtherNodes(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 10})
	other := newNode(t)
	prepareOrphans(t, e, other, table)
	t.Cleanup(func() {
		c, err := Open(context.Background(), func() Options { o := e.options(other); o.Dir = t.TempDir(); o.Grace = time.Millisecond; return o }())
		if err == nil {
			waitFor(t, "cleanup", func() bool { return len(e.prepared(other)) == 0 })
			c.Close()
		}
	})
	o := e.options(newNode(t))
	o.Grace = time.Millisecond
	c := e.open(o)
	for i := 0; i < 3; i++ {
		if err := c.Recover(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.prepared(other)); n != 3 {
		t.Fatalf("another node's branches were touched: %d left of 3", n)
	}
}

func TestRecoveryCommitsDecidedAfterCrash(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	o := e.options(node)
	o.Grace = time.Hour // only the decision may commit these
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	c.hookAfterDecision = func(string) error { return errSimulatedCrash }
	ctx := context.Background()
	topic := "xat." + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: "crash-" + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
	})
	if !errors.Is(err, errSimulatedCrash) {
		t.Fatalf("%+v %v", in, err)
	}
	waitFor(t, "the branches to be listed", func() bool { return len(e.prepared(node)) == 3 })
	c.Close()
	if e.balance(e.my, table, "a") != 100 {
		t.Fatal("committed before the decision was applied")
	}
	c2 := e.open(o)
	waitFor(t, "recovery to commit", func() bool {
		got, err := c2.Get("crash-" + e.suffix)
		return err == nil && got.Status == StatusCommitted
	})
	if e.balance(e.my, table, "a") != 60 || e.balance(e.pg, table, "b") != 40 || len(e.messages(topic)) != 1 {
		t.Fatal("recovery did not commit every branch")
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("left prepared: %v", p)
	}
	// The repeat of the client id after the restart returns the commit.
	_, err = c2.Run(ctx, BeginOptions{ID: "crash-" + e.suffix}, func(context.Context, *GlobalTx) error { return nil })
	var dup *DuplicateError
	if !errors.As(err, &dup) || dup.Info.Status != StatusCommitted {
		t.Fatalf("repeat after restart: %v", err)
	}
}

func TestUndecidedRolledBackAtRestart(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	o := e.options(node)
	o.Grace = time.Hour // a logged, undecided transaction needs no grace after a restart
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	c.hookAfterPrepare = func(string) error { return errSimulatedCrash }
	ctx := context.Background()
	_, err = c.Run(ctx, BeginOptions{ID: "undecided-" + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg("xat."+e.suffix, "a", `{}`))
	})
	if !errors.Is(err, errSimulatedCrash) {
		t.Fatal(err)
	}
	c.Close()
	c2 := e.open(o)
	waitFor(t, "rollback", func() bool { return len(e.prepared(node)) == 0 })
	got, _ := c2.Get("undecided-" + e.suffix)
	waitFor(t, "rolled_back", func() bool { got, _ = c2.Get("undecided-" + e.suffix); return got.Status == StatusRolledBack })
	if e.balance(e.my, table, "a") != 100 || e.balance(e.pg, table, "b") != 0 {
		t.Fatal("changes left")
	}
}

// XAER_NOTA on a commit that was never sent: someone rolled the branch back by hand. The
// transaction is in doubt, not silently committed; an operator resolves it.
func TestNotaOnCommitIsInDoubt(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	c := e.open(e.options(node))
	c.hookAfterDecision = func(gtrid string) error {
		// A DBA's heuristic rollback of the PostgreSQL branch (prepared, so detached).
		_, err := e.pg.Exec("ROLLBACK PREPARED '" + pgGID(makeXid(gtrid, "ledger")) + "'")
		return err
	}
	ctx := context.Background()
	id := "nota-" + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg("xat."+e.suffix, "a", `{}`))
	})
	if !errors.Is(err, ErrInDoubt) || in.Status != StatusInDoubt {
		t.Fatalf("%+v %v", in, err)
	}
	if l := c.List(StatusInDoubt, 10); len(l) != 1 || l[0].ID != id {
		t.Fatalf("in-doubt list %+v", l)
	}
	if c.Stats().InDoubt != 1 {
		t.Fatal("stats")
	}
	got, err := c.Resolve(ctx, id, DecideCommit, "dba-alice")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "resolution", func() bool { got, _ = c.Get(id); return got.Status == StatusCommitted })
	if got.ResolvedBy != "dba-alice" || got.Code != "resolved_commit" {
		t.Fatalf("resolve not recorded: %+v", got)
	}
	if _, err := c.Resolve(ctx, id, DecideCommit, "x"); !errors.Is(err, ErrNotInDoubt) {
		t.Fatalf("second resolve: %v", err)
	}
	// Survives a restart.
	c.Close()
	c2 := e.open(e.options(node))
	got, err = c2.Get(id)
	if err != nil || got.Status != StatusCommitted || got.ResolvedBy != "dba-alice" {
		t.Fatalf("after restart %+v %v", got, err)
	}
}

// TestPostgresRestartBetweenPrepareAndCommit restarts the PostgreSQL server after the commit
// decision: phase 2 fails, recovery commits once the server is back. It disturbs every other
// test using PostgreSQL, so it runs only with IMAGO_DISRUPTIVE=1 (serially).
func TestPostgresRestartBetweenPrepareAndCommit(t *testing.T) {
	if os.Getenv("IMAGO_DISRUPTIVE") != "1" {
		t.Skip("restarts PostgreSQL; set IMAGO_DISRUPTIVE=1 to run (serially)")
	}
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	c := e.open(e.options(node))
	c.hookAfterDecision = func(string) error {
		out, err := exec.Command("pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart").CombinedOutput()
		if err != nil {
			t.Errorf("restart PostgreSQL: %v: %s", err, out)
		}
		return nil
	}
	ctx := context.Background()
	id := "pgrestart-" + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg("xat."+e.suffix, "a", `{}`))
	})
	if err != nil {
		t.Fatalf("the decision was commit; Run must not fail: %+v %v", in, err)
	}
	t.Logf("status right after commit: %s", in.Status)
	waitFor(t, "recovery to finish the commit", func() bool {
		got, _ := c.Get(id)
		return got.Status == StatusCommitted
	})
	waitFor(t, "PostgreSQL", func() bool { return e.pg.Ping() == nil })
	if e.balance(e.my, table, "a") != 60 || e.balance(e.pg, table, "b") != 40 || len(e.messages("xat."+e.suffix)) != 1 {
		t.Fatal("the restart lost a branch")
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("left prepared: %v", p)
	}
}
