package broker

import (
	"context"
	"testing"
)

// TestReplicatedRestartKeepsBranchesAndDecisions: in cluster mode a restart opens from the
// checkpoint and raft re-delivers only the entries after it, so what the checkpoint lists (a
// prepared XA branch, a coordinator's held decision) must come back from the checkpoint. Before
// the fix both were lost: the prepared branch answered XAER_NOTA, which a transaction manager
// takes for "already committed", and a recovering coordinator found no decision.
func TestReplicatedRestartKeepsBranchesAndDecisions(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b, _ := replRetentionBrokerSegment(t, dir, 1<<20)
	mustCreate(t, b, "tx", 2)
	x := Xid{FormatID: 1, Gtrid: []byte("g1"), Bqual: []byte("b1")}
	prepareBranch(t, b, x, "tx", "p0", "p1")
	if err := b.AppendDecisions(ctx, []DecisionRecord{{Key: "gtx-1", Value: []byte("commit")}}); err != nil {
		t.Fatal(err)
	}
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	b.Close()
	b, _ = replRetentionBrokerSegment(t, dir, 1<<20)
	defer b.Close()
	if d := b.Decisions(); len(d) != 1 || d[0].Key != "gtx-1" || string(d[0].Value) != "commit" {
		t.Fatalf("decisions after a restart: %v", d)
	}
	if _, err := b.XACommit(ctx, x, false); err != nil {
		t.Fatalf("commit the prepared branch after a restart: %v", err)
	}
	got := fetchAll(t, b, "tx", 0)
	got = append(got, fetchAll(t, b, "tx", 1)...)
	if len(got) != 2 {
		t.Fatalf("committed branch reads %d messages", len(got))
	}
}
