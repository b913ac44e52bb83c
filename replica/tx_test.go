package replica

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/imagomq/imago/broker"
)

// A prepared XA branch survives the loss of the leader that prepared it: the new leader lists
// it in recover and commits it, and every node then serves its messages. A decided commit's
// decision record reaches every node.
func TestXABranchSurvivesLeaderLoss(t *testing.T) {
	c := newTestCluster(t)
	l := c.leader()
	b := c.bs[l]
	if _, err := b.CreateTopic("pay", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	x := broker.Xid{FormatID: 7, Gtrid: []byte("g1"), Bqual: []byte("b")}
	if err := b.XAStart(x, broker.XANoFlags, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.XAAdd(x, []broker.TxMessage{{Topic: "pay", Message: broker.Message{Value: []byte("debit")}}, {Topic: "pay", Message: broker.Message{Value: []byte("credit")}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.XAEnd(x, broker.XASuccess); err != nil {
		t.Fatal(err)
	}
	if ro, err := b.XAPrepare(ctx, x); err != nil || ro {
		t.Fatalf("prepare: %v %v", ro, err)
	}
	// A local transaction commits through raft too.
	id, err := b.BeginTx(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddTx(id, []broker.TxMessage{{Topic: "pay", Message: broker.Message{Value: []byte("local")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CommitTx(ctx, id); err != nil {
		t.Fatalf("local commit: %v", err)
	}
	// A decided commit: the branch's commit carries the coordinator's decision.
	y := broker.Xid{FormatID: 7, Gtrid: []byte("g2"), Bqual: []byte("b")}
	if err := b.XAStart(y, broker.XANoFlags, 0); err != nil {
		t.Fatal(err)
	}
	if err := b.XAAdd(y, []broker.TxMessage{{Topic: "pay", Message: broker.Message{Value: []byte("decided")}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.XAEnd(y, broker.XASuccess); err != nil {
		t.Fatal(err)
	}
	if _, err := b.XACommitDecided(ctx, y, broker.DecisionRecord{Key: "g2", Value: []byte("commit")}); err != nil {
		t.Fatalf("decided commit: %v", err)
	}

	c.stop(l)
	nl := c.leader()
	nb := c.bs[nl]
	if got := nb.XARecover(); !slices.ContainsFunc(got, func(r broker.Xid) bool { return string(r.Gtrid) == "g1" }) {
		t.Fatalf("new leader's recover: %v, want g1 prepared", got)
	}
	if d := nb.Decisions(); len(d) != 1 || d[0].Key != "g2" || string(d[0].Value) != "commit" {
		t.Fatalf("new leader's decisions: %+v", d)
	}
	if _, err := nb.XACommit(ctx, x, false); err != nil {
		t.Fatalf("commit on the new leader: %v", err)
	}
	want := []string{"local", "decided", "debit", "credit"}
	c.start(l, false) // the old leader comes back and applies the commit it missed
	for n := range 3 {
		if c.bs[n] == nil {
			continue
		}
		got := fetchAll(t, c.bs[n], "pay", 0, len(want))
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("node %d: %v, want %v", n+1, got, want)
		}
		if len(c.bs[n].XARecover()) != 0 {
			t.Fatalf("node %d still lists prepared branches: %v", n+1, c.bs[n].XARecover())
		}
	}
}
