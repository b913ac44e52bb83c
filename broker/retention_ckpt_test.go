package broker

import (
	"context"
	"fmt"
	"syscall"
	"testing"
)

// checkServedFromStart fails unless b serves partition a/0 from the start it reports, each
// offset holding "v<offset>": a start whose log retention deleted answers corrupt_record.
func checkServedFromStart(t *testing.T, b *Broker) {
	t.Helper()
	info, err := b.Topic("a")
	if err != nil {
		t.Fatal(err)
	}
	start := info.Partitions[0].StartOffset
	res, err := b.Fetch(context.Background(), "a", 0, FetchOptions{Offset: start, MaxMessages: 1000})
	if err != nil {
		t.Fatalf("after the restart, fetch at the start %d: %v", start, err)
	}
	for _, m := range res.Messages {
		if string(m.Value) != fmt.Sprintf("v%d", m.Offset) {
			t.Fatalf("after the restart offset %d holds %q", m.Offset, m.Value)
		}
	}
}

// TestRetentionKeepsLogOfCheckpointedStarts: a retention pass moves the start offsets, and its
// checkpoint fails (a full disk while writing checkpoint.json). A periodic checkpoint then
// takes the retired index segments and is still writing when the next pass runs: that pass
// has no start to record, so it wrote no checkpoint and deleted the log up to the new starts,
// although the checkpoint on disk names the old ones. The periodic checkpoint fails too and
// the process dies: the restart served the old start from deleted log (corrupt_record).
func TestRetentionKeepsLogOfCheckpointedStarts(t *testing.T) {
	dir := t.TempDir()
	h := newPowerLoss(t) // the process-wide sync hook: holds and fails chosen syncs
	o := retentionOptions(t, dir, nil)
	a := mustOpen(t, o)
	retainedLog(t, a) // the checkpoint on disk names start 0

	held, release := h.holdNext(checkpointSync(dir))
	done := make(chan struct{})
	go func() { defer close(done); a.EnforceRetention() }()
	<-held
	release(syscall.ENOSPC) // the pass's checkpoint fails: no log is deleted
	<-done
	if info, _ := a.Topic("a"); info.Partitions[0].StartOffset == 0 {
		t.Fatal("retention let nothing go")
	}

	held, release = h.holdNext(checkpointSync(dir))
	ckpt := make(chan error, 1)
	go func() { ckpt <- a.checkpoint() }()
	<-held // the periodic checkpoint has taken the retired segments
	a.EnforceRetention()
	kill(a)
	release(syscall.EIO)
	if err := <-ckpt; err == nil {
		t.Fatal("the held checkpoint succeeded")
	}
	a.abandon()

	b := mustOpen(t, o)
	defer b.Close()
	checkServedFromStart(t, b)
}

// TestCompactionKeepsLogOfCheckpointedStarts: in cluster mode applying a retention record moves
// the start offsets, and only the next checkpoint records them. A compaction before that
// checkpoint (here it fails; it can also just come later) deleted the log the starts of the
// checkpoint on disk point into; after a crash the restart served those starts (the record is
// applied again only when raft re-delivers it) from deleted log: corrupt_record.
func TestCompactionKeepsLogOfCheckpointedStarts(t *testing.T) {
	dir := t.TempDir()
	f := injectSyncFaults(t, nil)
	a, _ := replRetentionBroker(t, dir)
	retainedLog(t, a) // the checkpoint on disk names start 0
	f.set(checkpointSync(dir))
	a.EnforceRetention() // the record is applied; its checkpoint fails
	if info, _ := a.Topic("a"); info.Partitions[0].StartOffset == 0 {
		t.Fatal("retention let nothing go")
	}
	if _, err := a.CompactLog(); err != nil {
		t.Fatal(err)
	}
	kill(a)
	a.abandon()
	f.set(nil)

	b, _ := replRetentionBroker(t, dir)
	defer b.Close()
	checkServedFromStart(t, b)
	// Once a checkpoint records the starts again, the log goes.
	reapply(t, b)
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if freed, err := b.CompactLog(); err != nil || freed == 0 {
		t.Fatalf("compaction after the checkpoint freed %d bytes (%v)", freed, err)
	}
	checkServedFromStart(t, b)
}
