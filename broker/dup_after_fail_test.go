package broker

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// TestNoDuplicateAnswerForCutRequest: with fsync interval or never a keyed request is
// acknowledged, and its key remembered, once written. When an fsync of the log then fails, the
// broker stops and the restart cuts the log at its durable end, taking that request with it.
// A retry of its key before the restart (its answer was lost) must not be answered "duplicate":
// the client would take the message as stored, and after the restart it is gone. It is answered
// with the failure, and retried after the restart it is stored. A key whose batch was fsync'd
// before the failure is still a duplicate. The failed fsync is injected (fault_test.go): a real
// disk cannot be made to fail one chosen fsync.
func TestNoDuplicateAnswerForCutRequest(t *testing.T) {
	eachLazyFsync(t, func(t *testing.T, dir string, o Options) {
		o.SegmentBytes = 8 << 10
		b := mustOpen(t, o)
		defer b.abandon()
		mustCreate(t, b, "t", 1)
		ctx := context.Background()
		if _, err := b.Produce(ctx, "t", []Message{msg("v0")}, "synced"); err != nil {
			t.Fatal(err)
		}
		f := injectSyncFaults(t, nil)
		// A roll fsyncs the segment it leaves (v0 with it): before the lost request is
		// written, that fsync works.
		fill := func(n int) []Message {
			return []Message{{Value: append([]byte("fill:"), bytes.Repeat([]byte{'x'}, n)...)}}
		}
		big := fill(7000)
		for _, m := range [][]Message{fill(6000), big} {
			if _, err := b.Produce(ctx, "t", m, ""); err != nil {
				t.Fatal(err)
			}
		}
		first, err := b.Produce(ctx, "t", []Message{msg("pay-1")}, "k1")
		if err != nil {
			t.Fatal(err)
		}
		// The next roll's fsync fails: the broker stops, and k1 lies past the durable end.
		f.set(fileSyncUnder(filepath.Join(dir, "log")))
		if _, err := b.Produce(ctx, "t", big, ""); err == nil {
			t.Fatal("a produce whose roll fsync failed was acknowledged")
		}
		if f.count() == 0 {
			t.Fatal("no fsync failed: the scene did not happen")
		}
		retry, rerr := b.Produce(ctx, "t", []Message{msg("pay-1")}, "k1")
		t.Logf("k1 first %+v; retry after the failure: %+v %v", first, retry, rerr)
		if res, err := b.Produce(ctx, "t", []Message{msg("v0")}, "synced"); err != nil || !res.Duplicate {
			t.Errorf("retry of a key fsync'd before the failure: %+v %v, want a duplicate", res, err)
		}
		f.set(nil)
		b.abandon()
		b = mustOpen(t, o)
		var stored bool
		for _, m := range fetchAll(t, b, "t", 0) {
			stored = stored || string(m.Value) == "pay-1"
		}
		if rerr == nil && retry.Duplicate && !stored {
			t.Fatalf("the retry of k1 after the fsync failure was answered duplicate (%+v), and the restart cut k1: a retry told the message was stored, and it is lost", retry)
		}
		if rerr != nil && !errors.Is(rerr, ErrStorage) {
			t.Fatalf("retry of k1 after the failure: %v, want the storage failure", rerr)
		}
		res, err := b.Produce(ctx, "t", []Message{msg("pay-1")}, "k1")
		if err != nil || res.Duplicate == !stored {
			t.Fatalf("retry of k1 after the restart: %+v %v (k1 stored: %v)", res, err, stored)
		}
	})
}
