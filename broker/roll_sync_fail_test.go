package broker

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// TestRollFsyncFailureAcknowledgesNothingItCuts: with fsync interval (or never) a request is
// acknowledged once written, before any fsync. When a group of requests meets a segment roll,
// the flusher writes the requests before the roll and fsyncs the segment; if that fsync fails,
// the broker stops and records the durable end of the log, where the restart cuts it. A request
// of that group written before the failed fsync lies past that end: it must be answered with
// the failure, not acknowledged, since its bytes are certainly cut at the restart. It was
// acknowledged (after the failure was known), its Idempotency-Key answered "duplicate" until
// the restart, and then the message was gone. The failed fsync is injected (fault_test.go):
// a real disk cannot be made to fail one chosen fsync.
func TestRollFsyncFailureAcknowledgesNothingItCuts(t *testing.T) {
	eachLazyFsync(t, func(t *testing.T, dir string, o Options) {
		o.SegmentBytes = 8 << 10
		b := mustOpen(t, o)
		defer b.abandon()
		mustCreate(t, b, "t", 1)
		ctx := context.Background()
		big := func(v string, n int) []Message {
			return []Message{{Value: append([]byte(v+":"), bytes.Repeat([]byte{'x'}, n)...)}}
		}
		if _, err := b.Produce(ctx, "t", big("fill", 6000), ""); err != nil {
			t.Fatal(err)
		}
		// The next produce rolls the segment: hold the flusher in that roll's fsync while
		// two keyed requests queue behind it, so that they form one group.
		f := injectSyncFaults(t, nil)
		logSync := fileSyncUnder(filepath.Join(dir, "log"))
		entered := f.holdNext(logSync)
		type answer struct {
			res ProduceResult
			err error
		}
		roll, r0, r1 := make(chan answer, 1), make(chan answer, 1), make(chan answer, 1)
		go func() { res, err := b.Produce(ctx, "t", big("roll", 4000), ""); roll <- answer{res, err} }()
		<-entered
		go func() { res, err := b.Produce(ctx, "t", []Message{msg("pay-1")}, "k1"); r0 <- answer{res, err} }()
		waitFor(t, "the first keyed request to queue", func() bool { return queued(b) == 1 })
		go func() { res, err := b.Produce(ctx, "t", big("pay-2", 7000), "k2"); r1 <- answer{res, err} }()
		waitFor(t, "the second keyed request to queue", func() bool { return queued(b) == 2 })
		// Their group writes k1, then rolls for k2: that roll's fsync fails.
		f.set(logSync)
		f.release()
		if a := <-roll; a.err != nil {
			t.Fatalf("the rolling produce (written before the failure): %v", a.err)
		}
		a0, a1 := <-r0, <-r1
		if a1.err == nil {
			t.Fatalf("k2 was acknowledged although the fsync before it failed: %+v", a1.res)
		}
		if f.count() == 0 {
			t.Fatal("no fsync failed: the scene did not happen")
		}
		t.Logf("k1: %+v %v; k2: %v", a0.res, a0.err, a1.err)
		if a0.err != nil && !errors.Is(a0.err, ErrStorage) {
			t.Fatalf("k1: %v, want a storage failure", a0.err)
		}
		f.set(nil)
		b.abandon()
		b = mustOpen(t, o)
		for _, m := range fetchAll(t, b, "t", 0) {
			if strings.HasPrefix(string(m.Value), "pay-") {
				t.Fatalf("%q survived the restart although its request failed", m.Value)
			}
		}
		if a0.err == nil {
			t.Fatalf("k1 was acknowledged (%+v) after the fsync failed, and the restart cut it: an acknowledged message lost", a0.res)
		}
		res, err := b.Produce(ctx, "t", []Message{msg("pay-1")}, "k1")
		if err != nil || res.Duplicate {
			t.Fatalf("retry of k1 after the restart: %+v %v, want a new append", res, err)
		}
	})
}
