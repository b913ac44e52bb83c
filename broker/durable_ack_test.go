package broker

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// A batch whose fsync succeeded is on disk: whatever fails after that (creating the next index
// file or the next log segment) must not answer it with a retryable failure, or an unkeyed
// retry stores it twice and a local transaction is told rolled_back although it committed.

func TestDurableBatchAckedWhenIndexCreateFails(t *testing.T) {
	open := func(t *testing.T) (string, Options, *Broker, *syncFault) {
		dir := t.TempDir()
		o := testOptions(t, dir)
		o.IndexSegmentEntries = 4
		b := mustOpen(t, o)
		mustCreate(t, b, "t", 1)
		produceN(t, b, 4) // fills index segment 0; offset 4 needs a new index file
		f := injectSyncFaults(t, dirSyncUnder(filepath.Join(dir, "index")))
		return dir, o, b, f
	}
	reopen := func(t *testing.T, f *syncFault, b *Broker, o Options) *Broker {
		if f.count() == 0 {
			t.Fatal("no index directory sync failed: the fault was not injected")
		}
		if b.Err() == nil {
			t.Error("Err is nil although the broker cannot index")
		}
		f.set(nil)
		b.Close()
		return mustOpen(t, o)
	}

	t.Run("produce", func(t *testing.T) {
		_, o, b, f := open(t)
		res, err := b.Produce(context.Background(), "t", []Message{msg("v4")}, "pay-4")
		if err != nil {
			t.Fatalf("produce of a batch that reached the disk failed: %v", err)
		}
		if res.Offsets[0].Offset != 4 {
			t.Fatalf("offset %d, want 4", res.Offsets[0].Offset)
		}
		b = reopen(t, f, b, o)
		defer b.Close()
		wantValues(t, fetchAll(t, b, "t", 0), 5)
		again, err := b.Produce(context.Background(), "t", []Message{msg("v4")}, "pay-4")
		if err != nil || !again.Duplicate || again.Offsets[0].Offset != 4 {
			t.Fatalf("retry after restart: %+v %v, want duplicate of offset 4", again, err)
		}
	})

	t.Run("local transaction", func(t *testing.T) {
		_, o, b, f := open(t)
		id, err := b.BeginTx(0)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.AddTx(id, txMsgs("t", "v4")); err != nil {
			t.Fatal(err)
		}
		pos, err := b.CommitTx(context.Background(), id)
		if err != nil {
			t.Fatalf("commit whose batch reached the disk failed: %v", err)
		}
		if len(pos) != 1 || pos[0].Offset != 4 {
			t.Fatalf("positions %+v", pos)
		}
		if info, err := b.TxStatus(id); err != nil || info.State != TxCommitted {
			t.Fatalf("status %+v %v, want committed", info, err)
		}
		b = reopen(t, f, b, o)
		defer b.Close()
		wantValues(t, fetchAll(t, b, "t", 0), 5)
	})
}

func TestDurableBatchAckedWhenSegmentRollFails(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.SegmentBytes = 8 << 10
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	f := injectSyncFaults(t, nil)
	logDir := filepath.Join(dir, "log")

	// v0's fsync blocks, so that v1 and the large v2 queue behind it and go out as one group:
	// v1 fits in the segment, v2 needs a new one, whose creation fails.
	entered := f.holdNext(fileSyncUnder(logDir))
	type result struct {
		res ProduceResult
		err error
	}
	produce := func(v string) chan result {
		ch := make(chan result, 1)
		go func() {
			r, err := b.Produce(context.Background(), "t", []Message{msg(v)}, "")
			ch <- result{r, err}
		}()
		return ch
	}
	r0 := produce("v0")
	<-entered
	r1 := produce("v1")
	waitFor(t, "v1 queued", func() bool { return queued(b) == 1 })
	r2 := produce("v2" + strings.Repeat("x", 8<<10))
	waitFor(t, "v2 queued", func() bool { return queued(b) == 2 })
	f.set(dirSyncUnder(logDir))
	f.release()

	if r := <-r0; r.err != nil {
		t.Fatalf("v0: %v", r.err)
	}
	if r := <-r1; r.err != nil {
		t.Fatalf("v1 was fsync'd before the roll failed, yet it got %v", r.err)
	} else if r.res.Offsets[0].Offset != 1 {
		t.Fatalf("v1 at %+v", r.res.Offsets)
	}
	if r := <-r2; r.err == nil {
		t.Fatal("v2 was never written, yet it was acknowledged")
	}
	if f.count() == 0 {
		t.Fatal("the segment's directory sync did not fail: the fault was not injected")
	}
	f.set(nil)
	b.Close()
	b = mustOpen(t, o)
	defer b.Close()
	wantValues(t, fetchAll(t, b, "t", 0), 2)
}
