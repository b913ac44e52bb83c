package broker

import (
	"context"
	"fmt"
	"testing"
)

// heldVerbScene opens a replicated leader (its proposer in term 1) and a follower, gives the
// leader branch x holding one message (prepared on both when prepared, else idle on the leader
// only), and runs verb on the leader with its proposal held. It returns the held proposal, its
// raft index, and the verb's answer.
func heldVerbScene(t *testing.T, prepared bool, verb func(*Broker, Xid) error) (a, f *Broker, p *loopProposer, x Xid, h heldProposal, index uint64, answer <-chan error) {
	t.Helper()
	a, f, p = replicatedPair(t)
	x = idleBranch(t, a)
	if prepared {
		if _, err := a.XAPrepare(context.Background(), x); err != nil {
			t.Fatal(err)
		}
	}
	follow(t, a, f)
	p.mu.Lock()
	p.hold = true
	p.next++
	index = p.next
	p.mu.Unlock()
	c := make(chan error, 1)
	go func() { c <- verb(a, x) }()
	return a, f, p, x, <-p.held, index, c
}

func heuristic(commit bool) func(*Broker, Xid) error {
	return func(b *Broker, x Xid) error { return b.XAHeuristic(context.Background(), x, commit) }
}

func commitXA(onePhase bool) func(*Broker, Xid) error {
	return func(b *Broker, x Xid) error {
		_, err := b.XACommit(context.Background(), x, onePhase)
		return err
	}
}

func rollbackXA(b *Broker, x Xid) error { return b.XARollback(context.Background(), x) }

func wantXAState(t *testing.T, who string, b *Broker, x Xid, want TxState) {
	t.Helper()
	if st, ok := b.XAState(x); st != want {
		t.Fatalf("the %s holds %s as %q (known %v); want %q", who, x, st, ok, want)
	}
}

// TestReplicatedHeuristicAppliedThenOutcomeUnknown: an operator's heuristic decision was
// committed and applied on every member, this leader included, and its answer was outcome
// unknown. XAHeuristic put the branch back to prepared (with no messages: applying the
// decision had dropped them) on the leader alone: the transaction manager's commit was then
// answered OK and wrote nothing (after a heuristic rollback: a commit reported done whose
// messages never appear), instead of XA_HEURRB or XA_HEURCOM, and the followers kept the
// heuristic branch; a checkpoint listed it prepared at the decision's position, and the
// restart refused to start (that batch is no prepare).
func TestReplicatedHeuristicAppliedThenOutcomeUnknown(t *testing.T) {
	for _, tc := range []struct {
		commit bool
		want   TxState
		code   string
	}{
		{true, TxHeurCommitted, XAHeurCom},
		{false, TxHeurRolledBack, XAHeurRB},
	} {
		t.Run(fmt.Sprint("commit=", tc.commit), func(t *testing.T) {
			a, f, p, x, h, index, answer := heldVerbScene(t, true, heuristic(tc.commit))
			if err := p.commit(index, h.data); err != nil {
				t.Fatal(err)
			}
			h.out <- lostLeadership
			if err := <-answer; xaCode(err) != XAERRMFail {
				t.Fatalf("heuristic decision whose answer was lost: %v; want %s", err, XAERRMFail)
			}
			wantXAState(t, "leader", a, x, tc.want)
			follow(t, a, f)
			wantXAState(t, "follower", f, x, tc.want)
			p.release(2)
			if _, err := a.XACommit(context.Background(), x, false); xaCode(err) != tc.code {
				t.Fatalf("the manager's commit: %v; want %s", err, tc.code)
			}
			if err := a.checkpoint(); err != nil {
				t.Fatal(err)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			r, err := Open(a.opts)
			if err != nil {
				t.Fatalf("restart after a checkpoint: %v", err)
			}
			defer r.Close()
			wantXAState(t, "restarted leader", r, x, tc.want)
		})
	}
}

// TestReplicatedVerbOutcomeUnknownAfterLaterDecision: a verb's entry on a prepared branch was
// lost with the leadership, and the next leader's operator decided the branch heuristically;
// this node applied that decision before the verb's answer (outcome unknown) reached it. The
// verb put the branch back to prepared over the applied decision, on this node alone (with the
// decision's position as its prepare position: a checkpoint then named a prepare batch that is
// not there).
func TestReplicatedVerbOutcomeUnknownAfterLaterDecision(t *testing.T) {
	for _, tc := range []struct {
		name         string
		verb         func(*Broker, Xid) error
		decideCommit bool
		want         TxState
	}{
		{"rollback", rollbackXA, true, TxHeurCommitted},
		{"commit", commitXA(false), false, TxHeurRolledBack},
		{"heuristic commit", heuristic(true), false, TxHeurRolledBack},
		{"heuristic rollback", heuristic(false), true, TxHeurCommitted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, f, _, x, h, _, answer := heldVerbScene(t, true, tc.verb)
			// f leads in term 2; the held entry never reached it.
			f.SetProposer(&loopProposer{b: f, term: 2, next: f.RaftLog().LastIndex()})
			if err := f.XAHeuristic(context.Background(), x, tc.decideCommit); err != nil {
				t.Fatal(err)
			}
			follow(t, f, a)
			h.out <- lostLeadership
			if err := <-answer; xaCode(err) != XAERRMFail {
				t.Fatalf("%s whose entry was lost: %v; want %s", tc.name, err, XAERRMFail)
			}
			wantXAState(t, "new leader", f, x, tc.want)
			wantXAState(t, "old leader", a, x, tc.want)
		})
	}
}

// TestReplicatedOnePhaseCommitOutcomeUnknown: a one-phase commit (the branch was never
// prepared: only the leader's memory holds it) answered outcome unknown put the branch back to
// idle, where a rollback is answered OK without writing anything (and the timeout rolls it
// back the same way). Its entry, committed by the next leader, was then applied: the
// transaction manager was told rolled back and the messages are visible. The branch stays
// committing until the log says: a rollback or a second commit is answered XAER_RMFAIL. The
// coordinator's decided commit (a one-phase commit carrying its decision) is the same.
func TestReplicatedOnePhaseCommitOutcomeUnknown(t *testing.T) {
	ctx := context.Background()
	decided := func(b *Broker, x Xid) error {
		_, err := b.XACommitDecided(ctx, x, DecisionRecord{Key: "g1", Value: []byte("committed")})
		return err
	}
	for _, tc := range []struct {
		name   string
		commit func(*Broker, Xid) error
	}{
		{"one-phase commit", commitXA(true)},
		{"decided commit", decided},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, f, p, x, h, index, answer := heldVerbScene(t, false, tc.commit)
			h.out <- lostLeadership
			if err := <-answer; xaCode(err) != XAERRMFail {
				t.Fatalf("%s whose answer was lost: %v; want %s", tc.name, err, XAERRMFail)
			}
			if err := a.XARollback(ctx, x); xaCode(err) != XAERRMFail {
				t.Fatalf("rollback while the commit's outcome is unknown: %v; want %s", err, XAERRMFail)
			}
			if err := tc.commit(a, x); xaCode(err) != XAERRMFail {
				t.Fatalf("second commit while the first one's outcome is unknown: %v; want %s", err, XAERRMFail)
			}
			if got := a.XARecover(); len(got) != 0 {
				t.Errorf("recover lists %v: the branch was never prepared", got)
			}
			if err := p.commit(index, h.data); err != nil {
				t.Fatal(err)
			}
			if st, ok := a.XAState(x); ok {
				t.Fatalf("after its commit was applied the leader holds %s %s", x, st)
			}
			follow(t, a, f)
			for _, b := range []*Broker{a, f} {
				if got := values(fetchAll(t, b, "t", 0)); fmt.Sprint(got) != "[pay-1]" {
					t.Fatalf("the topic holds %v; want [pay-1]", got)
				}
			}
		})
	}
}

// TestReplicatedOnePhaseCommitOutcomeUnknownLost: the one-phase commit's entry was lost with
// the leadership; once an entry of a later term is applied the branch is idle again, and the
// manager's second commit writes its message once.
func TestReplicatedOnePhaseCommitOutcomeUnknownLost(t *testing.T) {
	ctx := context.Background()
	a, f, p, x, h, _, answer := heldVerbScene(t, false, commitXA(true))
	h.out <- lostLeadership
	if err := <-answer; xaCode(err) != XAERRMFail {
		t.Fatalf("one-phase commit whose answer was lost: %v; want %s", err, XAERRMFail)
	}
	p.mu.Lock()
	p.next-- // the held entry never reached the log: raft reuses its index
	p.mu.Unlock()
	p.release(2)
	if _, err := a.Produce(ctx, "t", []Message{msg("other")}, ""); err != nil {
		t.Fatal(err)
	}
	wantXAState(t, "leader", a, x, TxIdle)
	if _, err := a.XACommit(ctx, x, true); err != nil {
		t.Fatalf("one-phase commit after the first was lost: %v", err)
	}
	follow(t, a, f)
	if got := values(fetchAll(t, f, "t", 0)); fmt.Sprint(got) != "[other pay-1]" {
		t.Fatalf("the follower's topic holds %v; want [other pay-1]", got)
	}
}
