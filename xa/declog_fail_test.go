package xa

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// cleanLeftovers rolls back, at the end of the test, whatever branch of node is still
// prepared (a failing test leaves them holding locks, and its tables could not be dropped).
func cleanLeftovers(t *testing.T, e *env, node string) {
	t.Cleanup(func() {
		ctx := context.Background()
		for _, r := range e.options(node).Resources {
			xids, err := r.rm().recover(ctx)
			if err != nil {
				continue
			}
			for _, x := range xids {
				if _, n, _, _ := parseXid(x); n == node {
					_ = r.rm().rollback(ctx, x)
				}
			}
		}
	})
}

// A decision log that failed (an fsync error: a fault a real disk cannot be made to produce on
// demand, so the log is failed directly) must not let a transaction prepare: each would end
// in_doubt with its branches prepared and their locks held. The transaction rolls back, no
// branch is left prepared, and Ping (what /readyz asks) reports the log.
func TestFailedDecisionLogRefusesPrepare(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	c := e.open(e.options(node))
	cleanLeftovers(t, e, node)
	ctx := context.Background()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping with a healthy log: %v", err)
	}
	c.dlog.(*decisionLog).fail(errors.New("fsync decision log: input/output error (injected)"))
	for i, id := range []string{"", "failed-log-" + e.suffix} {
		in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
			return transfer(ctx, tx, table, "a", "b", 30, msg("xat."+e.suffix, "a", `{}`))
		})
		if !errors.Is(err, ErrRolledBack) || in.Status != StatusRolledBack || in.Code != "decision_log_failed" {
			t.Fatalf("transaction %d with a failed decision log: %+v %v; want rolled_back, decision_log_failed", i, in, err)
		}
		for _, b := range in.Branches {
			if b.State == BranchPrepared {
				t.Fatalf("transaction %d: branch %s prepared with a failed decision log", i, b.Resource)
			}
		}
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("branches left prepared: %v", p)
	}
	if e.balance(e.my, table, "a") != 100 || e.balance(e.pg, table, "b") != 0 || len(e.messages("xat."+e.suffix)) != 0 {
		t.Fatal("a transaction changed data while the decision log had failed")
	}
	err := c.Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), "decision log") {
		t.Fatalf("ping with a failed decision log: %v; want an error naming the decision log", err)
	}
}

// The log fails between the prepare phase and the commit decision: the decision's append is
// refused, so nothing of it was written. That is a rollback (every branch rolled back now),
// not in_doubt with prepared branches waiting for a restart.
func TestDecisionNotWrittenRollsBack(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	c := e.open(e.options(node))
	cleanLeftovers(t, e, node)
	c.hookAfterPrepare = func(string) error {
		c.dlog.(*decisionLog).fail(errors.New("fsync decision log: input/output error (injected)"))
		return nil
	}
	ctx := context.Background()
	in, err := c.Run(ctx, BeginOptions{ID: "not-written-" + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 30, msg("xat."+e.suffix, "a", `{}`))
	})
	if !errors.Is(err, ErrRolledBack) || in.Status != StatusRolledBack {
		t.Fatalf("decision not written: %+v %v; want rolled_back", in, err)
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("branches left prepared: %v", p)
	}
	if e.balance(e.my, table, "a") != 100 || e.balance(e.pg, table, "b") != 0 || len(e.messages("xat."+e.suffix)) != 0 {
		t.Fatal("changes kept although the commit decision was never written")
	}
}

// Resolve takes effect only once its record is durable: with the log failed, the operator is
// told it failed and the transaction stays in_doubt (recovery does not apply the decision).
func TestResolveNotAppliedWhenNotLogged(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	c := e.open(e.options(node))
	cleanLeftovers(t, e, node)
	c.hookAfterDecision = func(gtrid string) error {
		_, err := e.pg.Exec("ROLLBACK PREPARED '" + pgGID(makeXid(gtrid, "ledger")) + "'")
		return err
	}
	ctx := context.Background()
	id := "resolve-fail-" + e.suffix
	if _, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg("xat."+e.suffix, "a", `{}`))
	}); !errors.Is(err, ErrInDoubt) {
		t.Fatalf("want in_doubt, got %v", err)
	}
	c.dlog.(*decisionLog).fail(errors.New("fsync decision log: input/output error (injected)"))
	if _, err := c.Resolve(ctx, id, DecideCommit, "dba-bob"); err == nil {
		t.Fatal("Resolve succeeded with a failed decision log")
	}
	if err := c.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := c.Get(id)
	if err != nil || got.Status != StatusInDoubt || got.ResolvedBy != "" {
		t.Fatalf("after a failed Resolve: %+v %v; want still in_doubt, unresolved", got, err)
	}
}
