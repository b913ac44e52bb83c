package broker

import (
	"context"
	"strings"
	"testing"
)

// TestDropCorruptBatchReportsWhatItDrops: when the dropped batch's header and records can still
// be read, the report names what is lost: the kind of batch, the transaction record and xid or
// the messages' topic, partition and offsets, and whether the last checkpoint covers it.
func TestDropCorruptBatchReportsWhatItDrops(t *testing.T) {
	t.Run("prepare after the checkpoint", func(t *testing.T) {
		dir := t.TempDir()
		b := mustOpen(t, manualOptions(t, dir))
		mustCreate(t, b, "t", 2)
		produceN(t, b, 1)
		if err := b.checkpoint(); err != nil {
			t.Fatal(err)
		}
		x := xid(1)
		prepareBranch(t, b, x, "t", "pay-1", "pay-2")
		b.txMu.Lock()
		xPos := b.txs[x.String()].preparePos
		b.txMu.Unlock()
		xEnd := b.log.end.Load()
		produceN(t, b, 1)
		b.abandon()
		overwrite(t, lastSegment(t, dir), xEnd-1, []byte{0xfe}) // the last prepared message
		rep, err := DropCorruptBatch(dir, xPos, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(rep.Dropped, "\n")
		for _, want := range []string{"the prepare record of " + x.String(), "after the last checkpoint", "a prepare, decision or idempotency key held there is forgotten"} {
			if !strings.Contains(got, want) {
				t.Fatalf("report:\n%s\nwants %q", got, want)
			}
		}
		// What the report and docs/operations.md promise: no checkpoint lists the branch, so it
		// is forgotten and its commit is answered XAER_NOTA.
		b = mustOpen(t, manualOptions(t, dir))
		defer b.Close()
		if r := b.XARecover(); len(r) != 0 {
			t.Fatalf("XARecover after the drop: %v", r)
		}
		if _, err := b.XACommit(context.Background(), x, false); xaCode(err) != "XAER_NOTA" {
			t.Fatalf("commit of the branch whose prepare was dropped: %v, want XAER_NOTA", err)
		}
	})
	t.Run("messages before the checkpoint", func(t *testing.T) {
		dir := t.TempDir()
		b := mustOpen(t, testOptions(t, dir))
		mustCreate(t, b, "t", 1)
		produceN(t, b, 10)
		at := b.log.end.Load()
		if _, err := b.Produce(context.Background(), "t", []Message{msg("a"), msg("b")}, "key-1"); err != nil {
			t.Fatal(err)
		}
		end := b.log.end.Load()
		produceN(t, b, 1)
		b.Close()
		overwrite(t, lastSegment(t, dir), end-1, []byte{0xfe}) // message b
		rep, err := DropCorruptBatch(dir, at, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(rep.Dropped, "\n")
		for _, want := range []string{"a message batch, with an idempotency key", "1 of its 2 records readable", "messages: t/0 offsets 10-10", "the last checkpoint (log position"} {
			if !strings.Contains(got, want) {
				t.Fatalf("report:\n%s\nwants %q", got, want)
			}
		}
	})
}
