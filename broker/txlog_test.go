package broker

import (
	"context"
	"sync"
	"testing"
	"time"
)

// waitQueued waits until at least n requests wait for the flusher.
func waitQueued(t *testing.T, b *Broker, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.qmu.Lock()
		got := len(b.queue)
		b.qmu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCompactionSkipsDecidedBranches: compaction picks old prepared branches, then re-writes
// their prepare batches at the head of the log. A commit or a heuristic decision queued in
// between lands in the log before the new PREPARE; after a crash the branch would be prepared
// again, its messages committed a second time by the transaction manager (or a heuristic
// outcome silently lost). The flusher holds the first round in fdatasync so both decisions
// are queued behind compaction's first re-prepare.
func TestCompactionSkipsDecidedBranches(t *testing.T) {
	h := newPowerLoss(t)
	dir := t.TempDir()
	o := manualOptions(t, dir)
	ctx := context.Background()
	b := mustOpen(t, o)
	mustCreate(t, b, "a", 1)
	committed, heuristic := xid(1), xid(2)
	for _, x := range []Xid{committed, heuristic} {
		b.XAStart(x, XANoFlags, 0)
		b.XAAdd(x, txMsgs("a", x.String()))
		b.XAEnd(x, XASuccess)
		if _, err := b.XAPrepare(ctx, x); err != nil {
			t.Fatal(err)
		}
	}

	held, release := h.holdNext(logSync(dir))
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); b.Produce(ctx, "a", []Message{msg("filler")}, "") }()
	<-held
	go func() { defer wg.Done(); b.compactPrepared(b.log.end.Load()) }()
	waitQueued(t, b, 1) // compaction chose both branches and queued the first re-prepare
	go func() {
		defer wg.Done()
		if _, err := b.XACommit(ctx, committed, false); err != nil {
			t.Errorf("commit: %v", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := b.XAHeuristic(ctx, heuristic, false); err != nil {
			t.Errorf("heuristic rollback: %v", err)
		}
	}()
	waitQueued(t, b, 3)
	release(nil)
	wg.Wait()

	b.abandon() // crash: no checkpoint; recovery replays the journal in the log
	b = mustOpen(t, o)
	defer b.Close()
	if st, ok := b.XAState(committed); ok {
		t.Errorf("the committed branch is back after the restart, %s: its transaction manager will commit it again", st)
	}
	if st, _ := b.XAState(heuristic); st != TxHeurRolledBack {
		t.Errorf("the heuristically rolled back branch is %q after the restart, want %s", st, TxHeurRolledBack)
	}
	if got := values(fetchAll(t, b, "a", 0)); len(got) != 2 {
		t.Errorf("topic holds %v, want the filler and the committed branch's one message", got)
	}
}

// TestCompactionSkipsForgottenBranches: a forget does not change the branch's state when it is
// queued (the branch goes when the forget is durable), so compaction, asking right before it
// encodes its re-write of the heuristic decision, still finds the branch as it chose it when the
// forget is queued ahead of it in the same round. The log then holds FORGET followed by the
// heuristic decision, and after a crash the forgotten branch is back: the transaction manager,
// which already forgot it, finds an unknown heuristic outcome in its recovery scan.
func TestCompactionSkipsForgottenBranches(t *testing.T) {
	h := newPowerLoss(t)
	dir := t.TempDir()
	o := manualOptions(t, dir)
	ctx := context.Background()
	b := mustOpen(t, o)
	mustCreate(t, b, "a", 1)
	x := xid(1)
	prepareBranch(t, b, x, "a", "m")
	if err := b.XAHeuristic(ctx, x, false); err != nil {
		t.Fatal(err)
	}

	held, release := h.holdNext(logSync(dir))
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); b.Produce(ctx, "a", []Message{msg("filler")}, "") }()
	<-held
	go func() {
		defer wg.Done()
		if err := b.XAForget(ctx, x); err != nil {
			t.Errorf("forget: %v", err)
		}
	}()
	waitQueued(t, b, 1) // the forget waits for the flusher
	go func() { defer wg.Done(); b.compactPrepared(b.log.end.Load()) }()
	waitQueued(t, b, 2) // compaction chose the branch and queued its heuristic decision again
	release(nil)
	wg.Wait()

	b.abandon()
	b = mustOpen(t, o)
	defer b.Close()
	if st, ok := b.XAState(x); ok {
		t.Errorf("the forgotten branch is back after the restart, %s", st)
	}
}
