package broker

import (
	"context"
	"slices"
	"testing"
)

// TestReplicatedPrepareCheckpointedBeforeAnswer: in cluster mode a prepare is applied (its
// entry is in the log and the branch prepared) before the proposer answers XAPrepare, which
// then marked the branch durable. A checkpoint in between left the branch out, and no later
// checkpoint was written while nothing else moved the log (Close writes none either): the
// restart, which re-applies only the entries after the checkpoint, forgot a branch it had
// voted prepared, and the transaction manager's commit was answered XAER_NOTA.
func TestReplicatedPrepareCheckpointedBeforeAnswer(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	o := manualOptions(t, dir)
	o.Replicated = true
	a := mustOpen(t, o)
	p := &loopProposer{b: a, held: make(chan heldProposal, 4), term: 1, next: a.RaftLog().LastIndex()}
	a.SetProposer(p)
	mustCreate(t, a, "t", 1)
	x := idleBranch(t, a)
	p.mu.Lock()
	p.hold = true
	p.next++
	index := p.next
	p.mu.Unlock()
	prepared := make(chan error, 1)
	go func() {
		_, err := a.XAPrepare(ctx, x)
		prepared <- err
	}()
	h := <-p.held
	applied := p.commit(index, h.data) // committed and applied; the answer is still on its way
	if err := a.checkpoint(); err != nil {
		t.Fatal(err)
	}
	h.out <- applied
	if err := <-prepared; err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	b := mustOpen(t, o)
	defer b.Close()
	b.SetProposer(&loopProposer{b: b, held: make(chan heldProposal, 4), term: 1, next: b.RaftLog().LastIndex()})
	if got := b.XARecover(); !slices.ContainsFunc(got, func(y Xid) bool { return y.String() == x.String() }) {
		t.Fatalf("after the restart recover lists %v: the prepared branch %s is gone", got, x)
	}
	if _, err := b.XACommit(ctx, x, false); err != nil {
		t.Fatalf("commit after the restart: %v", err)
	}
	if got := fetchAll(t, b, "t", 0); len(got) != 1 || string(got[0].Value) != "pay-1" {
		t.Fatalf("after the commit the topic holds %v", values(got))
	}
}
