package xa

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A recovery pass scans the ledger, then waits long on the wallet's scan. Meanwhile G
// prepares everywhere, decides commit, commits the wallet and the broker, and the ledger's
// COMMIT PREPARED fails because PostgreSQL just died: the client is told "committing". The
// pass must not read the ledger branch's absence from its older scan as "committed", nor
// forget G (status retention is 1ms here) before a scan begun after G finished has seen every
// resource; once PostgreSQL is back, recovery commits the ledger branch.
//
// PostgreSQL's death at that exact moment and the slow scan are injected by faultRM (a real
// server cannot be timed to the instruction); every branch is a real one.
func TestStaleScanDoesNotSettleLiveOutcome(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	o := e.options(node)
	ledger := wrapFault(Postgres("ledger", e.pg))
	wallet := wrapFault(MySQL("wallet", e.my))
	o.Resources = []Resource{wallet, ledger, Broker("broker", e.b)}
	o.RecoveryInterval = time.Hour // passes run when the test calls Recover (and at kicks)
	o.Retention, o.StatusRetention = time.Millisecond, time.Millisecond
	o.Grace = 500 * time.Millisecond
	clk := newTestClock(time.Now())
	o.Now = clk.now
	c := e.open(o)
	ctx := context.Background()
	topic := "xat." + e.suffix

	// Passes scan broker, ledger, wallet in that order: this one scans the ledger before G
	// exists and is held at the wallet's scan.
	held, release := wallet.holdNextScan()
	defer release()
	passDone := make(chan error, 1)
	go func() { passDone <- c.Recover(ctx) }()
	<-held

	ledger.down.Store(true)
	id := "stale-" + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
	})
	if err != nil || in.Status != StatusCommitting {
		t.Fatalf("want a commit decision left to recovery (committing), got %s %v", in.Status, err)
	}
	release()
	<-passDone
	// PostgreSQL stays down past the status retention; recovery keeps passing.
	clk.advance(time.Second)
	c.Recover(ctx)

	got, err := c.Get(id)
	switch {
	case errors.Is(err, ErrNotFound):
		t.Errorf("a stale scan let G be forgotten while its ledger branch is still prepared")
	case err != nil:
		t.Fatal(err)
	case got.Status != StatusCommitting:
		t.Errorf("a stale scan settled G as %s while its ledger branch is still prepared", got.Status)
	}

	ledger.down.Store(false)
	waitFor(t, "recovery to finish G", func() bool {
		c.Recover(ctx)
		clk.advance(time.Second) // past the grace period of a branch nobody owns
		return len(e.prepared(node)) == 0
	})
	if a, b, m := e.balance(e.my, table, "a"), e.balance(e.pg, table, "b"), len(e.messages(topic)); a != 60 || b != 40 || m != 1 {
		t.Fatalf("mixed outcome after a commit decision: wallet a=%d (want 60), ledger b=%d (want 40), messages=%d (want 1)", a, b, m)
	}
}
