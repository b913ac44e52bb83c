package broker

import (
	"context"
	"errors"
	"slices"
	"testing"
)

// lostLeadership is what the cluster package reports for an entry whose leader stepped down
// after proposing it (the loopProposer stands in for raft, which cannot be made to lose
// leadership between one given entry's apply and its answer on demand).
var lostLeadership = errors.New("cluster: outcome unknown: leadership lost after proposing")

// follow hands f every entry of leader's raft log that f does not hold yet, as raft does for
// a follower, and applies it.
func follow(t *testing.T, leader, f *Broker) {
	t.Helper()
	l := leader.RaftLog()
	for i := f.RaftLog().LastIndex() + 1; i <= l.LastIndex(); i++ {
		ents, err := l.Entries(i, i+1, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.RaftLog().Append(ents); err != nil {
			t.Fatal(err)
		}
		if err := f.RaftLog().Sync(); err != nil {
			t.Fatal(err)
		}
		if err := f.ApplyEntry(i, ents[0].Term, ents[0].Data); err != nil {
			t.Fatalf("follower applies entry %d: %v", i, err)
		}
	}
}

// replicatedPair opens a replicated leader, whose proposer (in term 1) can hold proposals, and
// a follower fed from it, and creates topic t with one partition on the leader.
func replicatedPair(t *testing.T) (a, f *Broker, p *loopProposer) {
	t.Helper()
	o := manualOptions(t, t.TempDir())
	o.Replicated = true
	a = mustOpen(t, o)
	t.Cleanup(func() { a.Close() })
	p = &loopProposer{b: a, held: make(chan heldProposal, 4), term: 1, next: a.RaftLog().LastIndex()}
	a.SetProposer(p)
	fo := manualOptions(t, t.TempDir())
	fo.Replicated = true
	f = mustOpen(t, fo)
	t.Cleanup(func() { f.Close() })
	mustCreate(t, a, "t", 1)
	return a, f, p
}

// idleBranch starts, fills with one message on topic t ("pay-1") and ends branch xid(1) on a.
func idleBranch(t *testing.T, a *Broker) Xid {
	t.Helper()
	x := xid(1)
	if err := a.XAStart(x, XANoFlags, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.XAAdd(x, txMsgs("t", "pay-1")); err != nil {
		t.Fatal(err)
	}
	if err := a.XAEnd(x, XASuccess); err != nil {
		t.Fatal(err)
	}
	return x
}

// unknownPrepareScene opens a replicated leader and a follower, and starts the prepare of an
// idle branch with one message whose proposal the leader's proposer holds. It returns the
// held proposal, its raft index, and the prepare's answer.
func unknownPrepareScene(t *testing.T) (a, f *Broker, p *loopProposer, x Xid, h heldProposal, index uint64, prepared <-chan error) {
	t.Helper()
	a, f, p = replicatedPair(t)
	x = idleBranch(t, a)
	p.mu.Lock()
	p.hold = true
	p.next++
	index = p.next
	p.mu.Unlock()
	c := make(chan error, 1)
	go func() {
		_, err := a.XAPrepare(context.Background(), x)
		c <- err
	}()
	return a, f, p, x, <-p.held, index, c
}

// release lets p commit proposals as they come, in term.
func (p *loopProposer) release(term uint64) {
	p.mu.Lock()
	p.hold, p.term = false, term
	p.mu.Unlock()
}

func wantRMFail(t *testing.T, err error) {
	t.Helper()
	var xe *XAError
	if !errors.As(err, &xe) || xe.Code != XAERRMFail {
		t.Fatalf("prepare whose answer was lost: %v; want %s", err, XAERRMFail)
	}
}

func listed(xs []Xid, x Xid) bool {
	return slices.ContainsFunc(xs, func(y Xid) bool { return y.String() == x.String() })
}

// TestReplicatedPrepareAppliedThenOutcomeUnknown: in cluster mode the prepare's entry was
// committed and applied (every member holds the branch prepared, the leader too) and the
// answer that came was "outcome unknown" (the leader stepped down meanwhile, or applied the
// entry as a follower before XAPrepare read the error). XAPrepare rolled the branch back in
// its memory only: the leader's recover did not list it, the transaction manager's rollback
// was answered XAER_NOTA and wrote nothing, and the followers kept the branch prepared, its
// message and log pinned, until some manager recovered it.
func TestReplicatedPrepareAppliedThenOutcomeUnknown(t *testing.T) {
	ctx := context.Background()
	a, f, p, x, h, index, prepared := unknownPrepareScene(t)
	if err := p.commit(index, h.data); err != nil {
		t.Fatal(err)
	}
	h.out <- lostLeadership
	wantRMFail(t, <-prepared)
	if got := a.XARecover(); !listed(got, x) {
		t.Errorf("the leader's recover lists %v after the prepare was applied: %s is missing", got, x)
	}
	follow(t, a, f)
	if !listed(f.XARecover(), x) {
		t.Fatalf("the follower does not hold %s prepared after applying its prepare", x)
	}
	p.release(2) // the manager, told XAER_RMFAIL, rolls back on the leader of a later term
	if err := a.XARollback(ctx, x); err != nil {
		t.Errorf("rollback after the failed prepare: %v", err)
	}
	follow(t, a, f)
	if st, ok := f.XAState(x); ok {
		t.Fatalf("after the rollback on the leader the follower holds %s %s", x, st)
	}
	if st, ok := a.XAState(x); ok {
		t.Fatalf("after the rollback the leader holds %s %s", x, st)
	}
}

// TestReplicatedPrepareOutcomeUnknownThenApplied: the answer "outcome unknown" comes first and
// the entry commits later (a new leader kept it): applying it makes the branch prepared on the
// old leader too, and a rollback there reaches every member.
func TestReplicatedPrepareOutcomeUnknownThenApplied(t *testing.T) {
	ctx := context.Background()
	a, f, p, x, h, index, prepared := unknownPrepareScene(t)
	h.out <- lostLeadership
	wantRMFail(t, <-prepared)
	if got := a.XARecover(); listed(got, x) {
		t.Fatalf("recover lists %s before its prepare was applied", x)
	}
	if err := p.commit(index, h.data); err != nil {
		t.Fatal(err)
	}
	if got := a.XARecover(); !listed(got, x) {
		t.Fatalf("the leader's recover lists %v after the prepare was applied: %s is missing", got, x)
	}
	p.release(2)
	if err := a.XARollback(ctx, x); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	follow(t, a, f)
	if st, ok := f.XAState(x); ok {
		t.Fatalf("after the rollback on the leader the follower holds %s %s", x, st)
	}
}

// TestReplicatedPrepareOutcomeUnknownNeverCommitted: the prepare's entry was lost with the
// leadership. The manager's rollback writes a rollback entry (no member knows the branch, so
// it changes nothing) and forgets the branch on the leader.
func TestReplicatedPrepareOutcomeUnknownNeverCommitted(t *testing.T) {
	ctx := context.Background()
	a, f, p, x, h, _, prepared := unknownPrepareScene(t)
	h.out <- lostLeadership
	wantRMFail(t, <-prepared)
	if st, ok := a.XAState(x); !ok || st != TxPreparing {
		t.Fatalf("after the lost prepare the branch is %q (known %v); want preparing", st, ok)
	}
	p.mu.Lock()
	p.next-- // the held entry never reached the log: raft reuses its index
	p.mu.Unlock()
	p.release(2)
	if err := a.XARollback(ctx, x); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if st, ok := a.XAState(x); ok {
		t.Fatalf("after the rollback the leader holds %s %s", x, st)
	}
	follow(t, a, f)
	if st, ok := f.XAState(x); ok {
		t.Fatalf("the follower holds %s %s", x, st)
	}
}
