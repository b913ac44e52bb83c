package broker

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// powerLossImage copies b's data directory into a new one as a power loss at this moment would
// leave it: the commit log cut back to what was fsync'd. Index, idempotency and checkpoint files
// are copied as they are (the checkpoint fsyncs them before naming them).
func powerLossImage(t *testing.T, b *Broker) string {
	t.Helper()
	durable := b.log.durable.Load()
	dst := t.TempDir()
	src := b.opts.Dir
	err := filepath.Walk(src, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, 0o755)
		}
		if fi.Name() == "LOCK" {
			return nil
		}
		size := fi.Size()
		if filepath.Base(filepath.Dir(path)) == "log" && strings.HasSuffix(fi.Name(), ".log") {
			base, err := strconv.ParseInt(strings.TrimSuffix(fi.Name(), ".log"), 10, 64)
			if err != nil {
				return err
			}
			if base > durable {
				return nil
			}
			size = min(size, durable-base)
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(to)
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.CopyN(out, in, size)
		return err
	})
	if err != nil {
		t.Fatalf("power-loss image: %v", err)
	}
	return dst
}

func endOf(b *Broker, topic string, part int) int64 {
	return b.table.Load().byName[topic].parts[part].end.Load()
}

// TestNoPublishAfterFailedFsync: Linux reports a writeback error once, so a second fdatasync
// after a failed one may succeed although the data never reached the disk. In interval mode the
// broker must not take that success as a reason to make the messages readable, and after a
// restart it must not serve them from the page cache either.
func TestNoPublishAfterFailedFsync(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.Fsync = FsyncPolicy{Mode: FsyncInterval, Interval: time.Millisecond}
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	f := injectSyncFaults(t, nil)
	logDir := filepath.Join(dir, "log")
	once := false
	f.set(func(ev fsutil.Event) bool {
		if once || !fileSyncUnder(logDir)(ev) {
			return false
		}
		once = true // the first fsync fails; the retry is let through to the disk
		return true
	})
	if _, err := b.Produce(context.Background(), "t", []Message{msg("lost")}, ""); err != nil {
		t.Fatalf("interval mode acknowledges after write: %v", err)
	}
	waitFor(t, "the failed fsync", func() bool { return f.count() == 1 })
	waitFor(t, "the broker to fail", func() bool { return b.Err() != nil })
	// A later request wakes the flusher, whose next interval fsync now succeeds.
	if _, err := b.Produce(context.Background(), "t", []Message{msg("refused")}, ""); err == nil {
		t.Fatal("produce accepted after a failed fsync")
	}
	b.Close() // its final fsync succeeds as well
	if end := endOf(b, "t", 0); end != 0 {
		t.Fatalf("readable end %d after a failed fsync: data that never reached the disk was published", end)
	}
	b = mustOpen(t, o)
	defer b.Close()
	if v := values(fetchAll(t, b, "t", 0)); len(v) != 0 {
		t.Fatalf("after restart the broker serves %v, which an fsync failed for", v)
	}
}

// TestFailedFsyncCutAtRestart: with fsync always, a request whose fsync failed was answered with
// an error; its bytes may still be in the page cache, and the restart must not serve them (the
// client retries, and a copy served from the cache would make two, or vanish at a power loss).
func TestFailedFsyncCutAtRestart(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	if _, err := b.Produce(context.Background(), "t", []Message{msg("v0")}, ""); err != nil {
		t.Fatal(err)
	}
	f := injectSyncFaults(t, fileSyncUnder(filepath.Join(dir, "log")))
	if _, err := b.Produce(context.Background(), "t", []Message{msg("failed")}, "k"); err == nil {
		t.Fatal("produce acknowledged although its fsync failed")
	}
	f.set(nil)
	b.Close()
	b = mustOpen(t, o)
	defer b.Close()
	wantValues(t, fetchAll(t, b, "t", 0), 1)
	res, err := b.Produce(context.Background(), "t", []Message{msg("v1")}, "k")
	if err != nil || res.Duplicate || res.Offsets[0].Offset != 1 {
		t.Fatalf("retry after restart: %+v %v, want a new message at offset 1", res, err)
	}
}

// TestCheckpointNotPastDurableLog: in interval mode a checkpoint taken while acknowledged bytes
// wait for their fsync must not claim them: after a power loss the log is shorter, and a
// checkpoint (with its idempotency keys) past its end makes a retried key answer "duplicate"
// with offsets that are then given to other messages.
func TestCheckpointNotPastDurableLog(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.Fsync = FsyncPolicy{Mode: FsyncInterval, Interval: time.Millisecond}
	o.CheckpointInterval = time.Hour
	b := mustOpen(t, o)
	defer b.Close()
	mustCreate(t, b, "t", 1)
	if _, err := b.Produce(context.Background(), "t", []Message{msg("v0")}, "k0"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "v0 readable", func() bool { return endOf(b, "t", 0) == 1 })

	f := injectSyncFaults(t, nil)
	entered := f.holdNext(fileSyncUnder(filepath.Join(dir, "log")))
	if _, err := b.Produce(context.Background(), "t", []Message{msg("k1-first")}, "k1"); err != nil {
		t.Fatal(err)
	}
	<-entered // written and acknowledged, its fsync not done
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	cp, err := loadCheckpoint(dir)
	if err != nil || cp == nil {
		t.Fatalf("checkpoint: %v", err)
	}
	if durable := b.log.durable.Load(); cp.Position > durable {
		t.Errorf("checkpoint at %d, past the durable log end %d", cp.Position, durable)
	}
	img := powerLossImage(t, b)
	f.release()

	oi := testOptions(t, img)
	oi.Fsync = o.Fsync
	b2 := mustOpen(t, oi)
	defer b2.Close()
	got := values(fetchAll(t, b2, "t", 0))
	if len(got) != 1 || got[0] != "v0" {
		t.Fatalf("after power loss: %v, want [v0]", got)
	}
	res, err := b2.Produce(context.Background(), "t", []Message{msg("k1-first")}, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if res.Duplicate {
		t.Fatalf("retry of k1, lost in the power loss, answered duplicate at %+v", res.Offsets)
	}
	other, err := b2.Produce(context.Background(), "t", []Message{msg("other")}, "")
	if err != nil {
		t.Fatal(err)
	}
	if other.Offsets[0] == res.Offsets[0] {
		t.Fatalf("two messages at %+v", res.Offsets[0])
	}
}

// TestOutcomeUnknownWhenFailMarkCannotBeRecorded: when the fsync fails and so do recording
// where the restart must cut and cutting the log there at once (failmark_unrecorded_test.go),
// the request may survive in the page cache: the answer says the outcome is unknown (retry only
// with the same key), and a local transaction is not reported rolled back.
func TestOutcomeUnknownWhenFailMarkCannotBeRecorded(t *testing.T) {
	dir := t.TempDir()
	b := mustOpen(t, testOptions(t, dir))
	defer b.Close()
	mustCreate(t, b, "t", 1)
	logDir := filepath.Join(dir, "log")
	injectSyncFaults(t, func(ev fsutil.Event) bool {
		return fileSyncUnder(logDir)(ev) || filepath.Base(ev.Path) == failMarkName
	})
	id, err := b.BeginTx(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddTx(id, txMsgs("t", "v")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CommitTx(context.Background(), id); !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("commit with a failed fsync and no fail mark: %v, want ErrOutcomeUnknown", err)
	}
	if info, _ := b.TxStatus(id); info.State == TxRolledBack {
		t.Fatal("a commit whose batch may be stored is reported rolled back")
	}
	if _, err := b.Produce(context.Background(), "t", []Message{msg("x")}, ""); err == nil {
		t.Fatal("produce accepted by a failed broker")
	}
}

// TestNeverModeCheckpointsAdvance: with fsync never, checkpoints may name only fsync'd log, so
// the flusher fsyncs once per checkpoint interval; without that the checkpoint would never move
// (a long replay at every start, and retention could never delete the log).
func TestNeverModeCheckpointsAdvance(t *testing.T) {
	o := testOptions(t, t.TempDir())
	o.Fsync = FsyncPolicy{Mode: FsyncNever}
	o.CheckpointInterval = 20 * time.Millisecond
	b := mustOpen(t, o)
	defer b.Close()
	mustCreate(t, b, "t", 1)
	produceN(t, b, 5)
	end := b.log.end.Load()
	waitFor(t, "a checkpoint covering the log", func() bool { return b.lastCkptPos.Load() == end })
	if d := b.log.durable.Load(); d < end {
		t.Fatalf("checkpoint at %d with the log durable to %d", end, d)
	}
}
