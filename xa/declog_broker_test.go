package xa

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// reopenBroker closes e's broker and opens it again on the same directory (its decisions are
// rebuilt from the log), as a restart of the process does.
func (e *env) reopenBroker() {
	e.t.Helper()
	e.b.Close()
	e.b = openQuietBroker(e.t, e.dir+"/broker", nil)
}

// With the decision log in the commit log, a commit decision made durable before a crash (in
// the batch that also commits the broker branch) is rebuilt by the broker's recovery and
// applied to the database branches by the coordinator's, and a transaction left undecided is
// rolled back at the restart (its broker branch never reached the log); a repeat of the client
// id returns the outcome.
func TestCommitLogDecisionsAcrossRestart(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0, "c": 100, "d": 0})
	node := newNode(t)
	cleanLeftovers(t, e, node)
	opts := func() Options {
		o := e.options(node)
		o.Grace = time.Hour // only decisions may finish these
		o.DecisionBroker = e.b
		return o
	}
	c := e.open(opts())
	ctx := context.Background()
	topic := "xat." + e.suffix
	c.hookAfterDecision = func(string) error { return errSimulatedCrash }
	if _, err := c.Run(ctx, BeginOptions{ID: "decided-" + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
	}); !errors.Is(err, errSimulatedCrash) {
		t.Fatal(err)
	}
	c.hookAfterDecision = nil
	c.hookAfterPrepare = func(string) error { return errSimulatedCrash }
	if _, err := c.Run(ctx, BeginOptions{ID: "undecided-" + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "c", "d", 7, msg(topic, "a", `{}`))
	}); !errors.Is(err, errSimulatedCrash) {
		t.Fatal(err)
	}
	// The broker branches are never prepared: the decided one was committed by the batch that
	// holds its decision, the undecided one was only ended (in memory).
	waitFor(t, "both transactions' database branches to be listed", func() bool { return len(e.prepared(node)) == 4 })
	if n := len(e.messages(topic)); n != 1 {
		t.Fatalf("%d messages before the restart; want the decided transaction's, visible with its decision", n)
	}
	c.Close()
	e.reopenBroker()

	c = e.open(opts())
	waitFor(t, "recovery to finish both", func() bool {
		d, err1 := c.Get("decided-" + e.suffix)
		u, err2 := c.Get("undecided-" + e.suffix)
		return err1 == nil && err2 == nil && d.Status == StatusCommitted && u.Status == StatusRolledBack
	})
	if e.balance(e.my, table, "a") != 60 || e.balance(e.pg, table, "b") != 40 || len(e.messages(topic)) != 1 || e.balance(e.my, table, "c") != 100 {
		t.Fatal("recovery did not apply the decisions from the commit log")
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("left prepared: %v", p)
	}
	c.Close()
	e.reopenBroker()
	c = e.open(opts())
	_, err := c.Run(ctx, BeginOptions{ID: "decided-" + e.suffix}, func(context.Context, *GlobalTx) error { return nil })
	var dup *DuplicateError
	if !errors.As(err, &dup) || dup.Info.Status != StatusCommitted {
		t.Fatalf("repeat of the client id after two restarts: %v; want the commit", err)
	}
}

// A coordinator on the commit log refuses to start over a decision file that still holds
// unfinished transactions (they would be forgotten).
func TestCommitLogRefusesUnfinishedFileLog(t *testing.T) {
	e := newEnv(t)
	node := newNode(t)
	o := e.options(node)
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l, _, err := openDecisionLog(o.Dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	r := sampleRecord(1)
	r.Gtrid = node + r.Gtrid[len(node):]
	if err := l.appendSync(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	l.close()
	o.DecisionBroker = e.b
	if c, err := Open(context.Background(), o); err == nil {
		c.Close()
		t.Fatal("opened on the commit log over a file log with an unfinished transaction")
	}
}

// The commit-log decision log fails between the prepare phase and the decided commit (a
// failed broker write: a fault a real disk cannot be made to produce on demand, so the log is
// failed directly): nothing of the decision nor of the broker branch is written, the
// transaction rolls back, no branch stays prepared and no message is published.
func TestCommitLogDecisionNotWrittenRollsBack(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	o := e.options(node)
	o.DecisionBroker = e.b
	c := e.open(o)
	cleanLeftovers(t, e, node)
	c.hookAfterPrepare = func(string) error {
		c.dlog.(*brokerDecisionLog).fail(errors.New("write decisions to the commit log: input/output error (injected)"))
		return nil
	}
	ctx := context.Background()
	in, err := c.Run(ctx, BeginOptions{ID: "cl-not-written-" + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 30, msg("xat."+e.suffix, "a", `{}`))
	})
	if !errors.Is(err, ErrRolledBack) || in.Status != StatusRolledBack || in.Code != "decision_log_failed" {
		t.Fatalf("decision not written: %+v %v; want rolled_back, decision_log_failed", in, err)
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("branches left prepared: %v", p)
	}
	if e.balance(e.my, table, "a") != 100 || e.balance(e.pg, table, "b") != 0 || len(e.messages("xat."+e.suffix)) != 0 {
		t.Fatal("changes kept although the commit decision was never written")
	}
	if err := c.Ping(ctx); err == nil {
		t.Fatal("Ping does not report the failed decision log")
	}
}
