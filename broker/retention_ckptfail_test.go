package broker

import (
	"context"
	"strings"
	"syscall"
	"testing"
)

// TestCompactionCheckpointFailureKeepsPreparePinned: a retention pass checkpoints, re-writes an
// old prepared branch at the head of the log, and the checkpoint that records the new position
// fails (a full disk while writing checkpoint.json). The checkpoint on disk still names the old
// prepare position. The next pass found nothing left to re-write, wrote no checkpoint, and
// deleted the segment holding that position: the restart could not read the prepare batch the
// checkpoint names and rebuilt every index from the log, serving again messages retention had
// let go.
func TestCompactionCheckpointFailureKeepsPreparePinned(t *testing.T) {
	dir := t.TempDir()
	h := newPowerLoss(t) // the process-wide sync hook: holds and fails chosen syncs
	logs := &logBuffer{}
	o := retentionOptions(t, dir, logs)
	ctx := context.Background()
	a := mustOpen(t, o)
	mustCreate(t, a, "a", 2)
	x := xid(1)
	prepareBranch(t, a, x, "a", "keep-0", "keep-1")
	fill(t, a, "a", 300)
	if err := a.checkpoint(); err != nil {
		t.Fatal(err)
	}

	held, release := h.holdNext(checkpointSync(dir))
	done := make(chan struct{})
	go func() { defer close(done); a.EnforceRetention() }()
	<-held // the pass's first checkpoint: it records the new starts
	held2, release2 := h.holdNext(checkpointSync(dir))
	release(nil)
	<-held2 // the checkpoint after the compaction
	release2(syscall.ENOSPC)
	<-done
	a.txMu.Lock()
	moved := a.txs[x.String()].preparePos
	a.txMu.Unlock()
	if moved < a.log.activeBase() {
		t.Fatalf("the prepared branch was not re-written at the head (at %d, head segment %d)", moved, a.log.activeBase())
	}
	a.EnforceRetention() // nothing left to re-write: no checkpoint
	starts := startOffsets(t, a, "a")
	kill(a)
	a.abandon()

	b := mustOpen(t, o)
	defer b.Close()
	if strings.Contains(logs.String(), "rebuilding every index") {
		t.Errorf("the restart rebuilt every index: the checkpoint on disk names a deleted prepare position\n%s", logs.String())
	}
	if got := startOffsets(t, b, "a"); got[0] != starts[0] || got[1] != starts[1] {
		t.Errorf("after the restart the partitions start at %v, before it at %v", got, starts)
	}
	// The checkpoint of the start lists the copy: the old batch's segment goes.
	first := b.log.start()
	b.EnforceRetention()
	if b.log.start() == first {
		t.Errorf("retention after the restart kept the log from %d", first)
	}
	if res, err := b.XACommit(ctx, x, false); err != nil || len(res) != 2 {
		t.Fatalf("commit of the compacted branch after the restart: %v %v", res, err)
	}
}

func startOffsets(t *testing.T, b *Broker, topic string) []int64 {
	t.Helper()
	info, err := b.Topic(topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, p := range info.Partitions {
		out = append(out, p.StartOffset)
	}
	return out
}

// TestReplicatedCompactionKeepsCheckpointedPrepare: in cluster mode a prepared branch pins the
// raft log until it is decided. A checkpoint lists it with its prepare position; it is then
// committed, and a compaction before the next checkpoint deleted the segment holding that
// position. After a crash the restart read the checkpoint, could not find the prepare batch it
// names, and refused to start.
func TestReplicatedCompactionKeepsCheckpointedPrepare(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	a, _ := replRetentionBroker(t, dir)
	mustCreate(t, a, "a", 2)
	x := xid(1)
	prepareBranch(t, a, x, "a", "keep-0", "keep-1")
	fill(t, a, "a", 300)
	a.EnforceRetention() // applied: the starts move, and its checkpoint lists the branch
	if err := a.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.XACommit(ctx, x, false); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CompactLog(); err != nil { // no checkpoint since the commit
		t.Fatal(err)
	}
	kill(a)
	a.abandon()

	b, _ := replRetentionBroker(t, dir)
	defer b.Close()
	reapply(t, b)
	if rec := b.XARecover(); len(rec) != 0 {
		t.Fatalf("recover after the restart lists %v; the branch was committed", rec)
	}
	// Once a checkpoint no longer lists the branch, its segment goes.
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if freed, err := b.CompactLog(); err != nil || freed == 0 {
		t.Fatalf("compaction after the checkpoint freed %d bytes (%v)", freed, err)
	}
}
