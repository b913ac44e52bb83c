package xa

import (
	"context"
	"errors"
	"testing"
	"time"
)

// slowDecisions holds a commit decision back until during has run, as a slow fsync would.
type slowDecisions struct {
	decisionStore
	during func(gtrid string)
}

func (s *slowDecisions) appendSync(ctx context.Context, r record) error {
	if r.Kind == recCommit && s.during != nil {
		s.during(r.Gtrid)
	}
	return s.decisionStore.appendSync(ctx, r)
}

// Recovery passes, far past the grace period, run while a live transaction is in the middle of
// its commit: once while the ledger's branch is prepared and the wallet's PREPARE has not yet
// run, once while the commit decision is being written. No pass may presume abort (the branch
// belongs to a transaction running here): the transaction commits everywhere.
func TestRecoveryScanDuringSlowCommit(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	topic := "xat." + e.suffix
	node := newNode(t)
	o := e.options(node)
	o.Grace = time.Millisecond
	o.RecoveryInterval = time.Hour // passes run when the test calls Recover (and at kicks)
	clk := newTestClock(time.Now())
	o.Now = clk.now
	wallet := &hookRM{resourceManager: MySQL("wallet", e.my).rm()}
	ledger := &hookRM{resourceManager: Postgres("ledger", e.pg).rm()}
	o.Resources = []Resource{wallet, ledger, Broker("broker", e.b)}
	e.rollbackLeftovers(node, o.Resources)
	c := e.open(o)
	ctx := context.Background()
	passes := func(why string) {
		for i := 0; i < 3; i++ {
			clk.advance(time.Second)
			c.Recover(ctx)
		}
		if len(e.prepared(node)) == 0 {
			t.Errorf("%s: the prepared branches are gone", why)
		}
	}
	ledgerPrepared := make(chan struct{})
	ledger.afterPrepare = func() { close(ledgerPrepared) }
	wallet.beforePrepare = func() {
		<-ledgerPrepared
		passes("while the wallet's PREPARE waits")
	}
	c.recMu.Lock() // no recovery pass reads c.dlog meanwhile
	c.mu.Lock()
	c.dlog = &slowDecisions{decisionStore: c.dlog, during: func(string) { passes("while the commit decision is written") }}
	c.mu.Unlock()
	c.recMu.Unlock()
	id := "race-" + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
	})
	if err != nil || in.Status != StatusCommitted {
		t.Fatalf("want committed, got %s %v", in.Status, err)
	}
	if a, b, m := e.balance(e.my, table, "a"), e.balance(e.pg, table, "b"), len(e.messages(topic)); a != 60 || b != 40 || m != 1 {
		t.Fatalf("wallet a=%d (want 60), ledger b=%d (want 40), %d messages (want 1)", a, b, m)
	}
}

// A live transaction whose commit decision loses to a rollback decision already in the log for
// its gtrid (as one written by another coordinator's presumed abort) rolls back every branch,
// and its client is told so, with the reason.
func TestLiveCommitLosesToLoggedRollback(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	topic := "xat." + e.suffix
	node := newNode(t)
	o := e.options(node)
	e.rollbackLeftovers(node, o.Resources)
	c := e.open(o)
	ctx := context.Background()
	c.hookAfterPrepare = func(gtrid string) error {
		now := time.Now()
		return c.dlog.appendSync(ctx, record{Kind: recRollback, Status: StatusRollingBack, Gtrid: gtrid, Created: now, Decided: now,
			Code: "presumed_abort", Branches: []recBranch{{Resource: "wallet", State: BranchPrepared}}})
	}
	id := "lose-" + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
	})
	if !errors.Is(err, ErrRolledBack) || !errors.Is(err, ErrConflictingDecision) {
		t.Fatalf("want a rollback for the conflicting decision, got %s %v", in.Status, err)
	}
	if in.Code != "conflicting_decision" {
		t.Errorf("the rollback's code is %q, want conflicting_decision (the decision log did not fail)", in.Code)
	}
	waitFor(t, "the rollback everywhere", func() bool {
		got, err := c.Get(id)
		return err == nil && got.Status == StatusRolledBack && len(e.prepared(node)) == 0
	})
	if a, b, m := e.balance(e.my, table, "a"), e.balance(e.pg, table, "b"), len(e.messages(topic)); a != 100 || b != 0 || m != 0 {
		t.Fatalf("wallet a=%d (want 100), ledger b=%d (want 0), %d messages (want 0)", a, b, m)
	}
	if err := c.dlog.failedErr(); err != nil {
		t.Fatalf("the refused decision failed the log: %v", err)
	}
}
