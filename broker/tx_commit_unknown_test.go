package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

type commitAnswer struct {
	pos []TopicPosition
	err error
}

// unknownCommitScene opens a replicated leader (its proposer in term 1) and a follower, and
// starts the commit of a local transaction holding one message, whose proposal the leader's
// proposer holds. It returns the held proposal, its raft index, and the commit's answer.
func unknownCommitScene(t *testing.T) (a, f *Broker, p *loopProposer, id string, h heldProposal, index uint64, committed <-chan commitAnswer) {
	t.Helper()
	a, f, p = replicatedPair(t)
	id, err := a.BeginTx(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.AddTx(id, txMsgs("t", "pay-1")); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.hold = true
	p.next++
	index = p.next
	p.mu.Unlock()
	c := make(chan commitAnswer, 1)
	go func() {
		pos, err := a.CommitTx(context.Background(), id)
		c <- commitAnswer{pos, err}
	}()
	return a, f, p, id, <-p.held, index, c
}

func wantOutcomeUnknown(t *testing.T, a commitAnswer) {
	t.Helper()
	if !errors.Is(a.err, ErrOutcomeUnknown) {
		t.Fatalf("commit whose answer was lost: %v, %v; want ErrOutcomeUnknown", a.pos, a.err)
	}
}

func wantTxState(t *testing.T, b *Broker, id string, want TxState) TxInfo {
	t.Helper()
	info, err := b.TxStatus(id)
	if err != nil || info.State != want {
		t.Fatalf("transaction status: %+v, %v; want %s", info, err, want)
	}
	return info
}

// wantCommittedOnce: the transaction is committed with its one message at t/0 offset 0, the
// topic holds it once, and neither a rollback nor a second commit is accepted.
func wantCommittedOnce(t *testing.T, a *Broker, id string) {
	t.Helper()
	info := wantTxState(t, a, id, TxCommitted)
	if fmt.Sprint(info.Offsets) != "[{t 0 0}]" {
		t.Errorf("committed transaction reports offsets %v; want [{t 0 0}]", info.Offsets)
	}
	if err := a.RollbackTx(context.Background(), id); !errors.Is(err, ErrTxState) {
		t.Errorf("rollback of the committed transaction: %v; want ErrTxState", err)
	}
	if _, err := a.CommitTx(context.Background(), id); !errors.Is(err, ErrTxState) {
		t.Errorf("second commit: %v; want ErrTxState", err)
	}
	if got := values(fetchAll(t, a, "t", 0)); fmt.Sprint(got) != "[pay-1]" {
		t.Fatalf("the topic holds %v; want [pay-1]", got)
	}
}

// TestReplicatedTxCommitOutcomeUnknownThenApplied: the leader lost its leadership with the
// commit in flight (answered outcome unknown) and the entry committed afterwards (the new
// leader kept it), so this node applied it: the messages are visible on every member. The
// transaction stayed "committing" in memory, which TxStatus reports as open, until a restart:
// a client polling its status to learn the outcome got "open" and its commit "not open" until
// its deadline, and never learnt that it committed. A later term's entry must not change that.
func TestReplicatedTxCommitOutcomeUnknownThenApplied(t *testing.T) {
	a, f, p, id, h, index, committed := unknownCommitScene(t)
	h.out <- lostLeadership
	wantOutcomeUnknown(t, <-committed)
	if err := a.RollbackTx(context.Background(), id); !errors.Is(err, ErrTxState) {
		t.Fatalf("rollback while the commit's outcome is unknown: %v; want ErrTxState", err)
	}
	if err := p.commit(index, h.data); err != nil {
		t.Fatal(err)
	}
	wantCommittedOnce(t, a, id)
	p.release(2) // this node leads again; its first entry of term 2 is applied
	if _, err := a.Produce(context.Background(), "t", []Message{msg("other")}, ""); err != nil {
		t.Fatal(err)
	}
	wantTxState(t, a, id, TxCommitted)
	follow(t, a, f)
	if got := values(fetchAll(t, f, "t", 0)); fmt.Sprint(got) != "[pay-1 other]" {
		t.Fatalf("the follower's topic holds %v", got)
	}
}

// TestReplicatedTxCommitAppliedThenOutcomeUnknown: the entry was committed and applied here
// before the answer, which was still "outcome unknown" (the leadership went between the two).
func TestReplicatedTxCommitAppliedThenOutcomeUnknown(t *testing.T) {
	a, _, p, id, h, index, committed := unknownCommitScene(t)
	if err := p.commit(index, h.data); err != nil {
		t.Fatal(err)
	}
	h.out <- lostLeadership
	wantOutcomeUnknown(t, <-committed)
	wantCommittedOnce(t, a, id)
}

// TestReplicatedTxCommitOutcomeUnknownLost: the commit's entry was lost with the leadership
// (the next leader's log did not hold it). Once this node applies an entry of a later term,
// no entry of the commit's term can commit any more: the transaction is open again, with its
// messages, and its commit (retried by the client, which saw "open") writes them once.
// Before that it stays committing: neither a rollback nor a second commit is accepted.
func TestReplicatedTxCommitOutcomeUnknownLost(t *testing.T) {
	for _, order := range []string{"answer first", "later term first"} {
		t.Run(order, func(t *testing.T) {
			a, f, p, id, h, _, committed := unknownCommitScene(t)
			newTerm := func() {
				p.mu.Lock()
				p.next-- // the held entry never reached the log: raft reuses its index
				p.mu.Unlock()
				p.release(2)
				if _, err := a.Produce(context.Background(), "t", []Message{msg("other")}, ""); err != nil {
					t.Fatal(err)
				}
			}
			if order == "later term first" {
				newTerm()
			}
			h.out <- lostLeadership
			wantOutcomeUnknown(t, <-committed)
			if order == "answer first" {
				if _, err := a.CommitTx(context.Background(), id); !errors.Is(err, ErrTxState) {
					t.Fatalf("commit while the first commit's outcome is unknown: %v; want ErrTxState", err)
				}
				newTerm()
			}
			wantTxState(t, a, id, TxOpen)
			pos, err := a.CommitTx(context.Background(), id)
			if err != nil {
				t.Fatalf("commit of the transaction whose first commit was lost: %v", err)
			}
			if fmt.Sprint(pos) != "[{t 0 1}]" {
				t.Errorf("commit answered %v; want [{t 0 1}]", pos)
			}
			wantTxState(t, a, id, TxCommitted)
			follow(t, a, f)
			if got := values(fetchAll(t, f, "t", 0)); fmt.Sprint(got) != "[other pay-1]" {
				t.Fatalf("the follower's topic holds %v; want [other pay-1]", got)
			}
		})
	}
}
