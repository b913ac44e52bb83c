package broker

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// TestHoleInLastFlushRefusesStart pins down a decision (verify.go): a power loss while the
// flusher waits in fdatasync can leave the last write(2) on disk with holes (a file system may
// write its pages back in any order and show never-written blocks as zeros). A zeroed batch
// followed by valid batches of the same, never acknowledged, flush then looks exactly like a
// damaged batch followed by acknowledged ones, and start-up refuses. Nothing acknowledged is
// lost either way, and the operator's drop keeps every valid batch (see the decision in
// verify.go for why start-up does not cut on its own).
func TestHoleInLastFlushRefusesStart(t *testing.T) {
	h := newPowerLoss(t)
	dir := t.TempDir()
	o := manualOptions(t, dir)
	ctx := context.Background()
	a := mustOpen(t, o)
	mustCreate(t, a, "t", 1)
	produceN(t, a, 3) // v0..v2, acknowledged

	held, release := h.holdNext(logSync(dir))
	errs := make(chan error, 4)
	go func() { _, err := a.Produce(ctx, "t", []Message{msg("x")}, ""); errs <- err }()
	<-held
	flushStart := a.log.end.Load() // where the next flush (A, B, C) will start
	for _, v := range []string{"A", "B", "C"} {
		go func() { _, err := a.Produce(ctx, "t", []Message{msg(v)}, "key-"+v); errs <- err }()
	}
	waitQueued(t, a, 3)
	held2, release2 := h.holdNext(logSync(dir))
	release(nil) // x is fsync'd and acknowledged
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	<-held2 // A, B and C are written by one write(2); the power goes during their fdatasync
	kill(a)
	defer func() {
		release2(syscall.EIO)
		for i := 0; i < 3; i++ {
			if err := <-errs; err == nil {
				t.Error("a request of the interrupted flush was acknowledged")
			}
		}
		a.abandon()
	}()
	// The disk kept B and C but not A's pages: A reads as zeros.
	batch := int64(batchHeaderSize + recordSize(&Message{Value: []byte("A")}))
	overwrite(t, lastSegment(t, dir), flushStart, make([]byte, batch))

	_, err := Open(o)
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.Position != flushStart || ce.ValidAfter != 2 {
		t.Fatalf("start-up after a hole in the last flush: %v, want a refusal naming log position %d with 2 valid batches after it", err, flushStart)
	}
	if _, err := DropCorruptBatch(dir, flushStart, nil); err != nil {
		t.Fatal(err)
	}
	b := mustOpen(t, o)
	defer b.Close()
	got := fetchAll(t, b, "t", 0)
	v := values(got)
	if len(v) != 6 || fmt.Sprint(v[:4]) != "[v0 v1 v2 x]" || got[4].Offset != 5 || got[5].Offset != 6 {
		t.Fatalf("after the drop: %v, want v0..v2, x and two of A, B, C at offsets 5 and 6", v)
	}
	lost := map[string]bool{"A": true, "B": true, "C": true}
	delete(lost, v[4])
	delete(lost, v[5])
	// The zeroed request was never acknowledged: its retry is stored. The kept ones (never
	// acknowledged either) answer their retries "duplicate".
	for k := range lost {
		if res, err := b.Produce(ctx, "t", []Message{msg(k)}, "key-"+k); err != nil || res.Duplicate {
			t.Fatalf("retry of the zeroed %s: %+v %v", k, res, err)
		}
	}
	if res, err := b.Produce(ctx, "t", []Message{msg(v[4])}, "key-"+v[4]); err != nil || !res.Duplicate {
		t.Fatalf("retry of the kept %s: %+v %v", v[4], res, err)
	}
}
