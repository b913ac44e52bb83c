package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// damageDedupe damages the idempotency files of the stopped broker in dir inside the durable
// range its checkpoint records, and returns the file it damaged.
func damageDedupe(t *testing.T, dir, how string) string {
	t.Helper()
	cp, err := loadCheckpoint(dir)
	if err != nil || cp == nil || cp.Dedupe.File == "" || cp.Dedupe.Size == 0 {
		t.Fatalf("checkpoint %+v, %v: no idempotency file to damage", cp, err)
	}
	path := filepath.Join(dir, "dedupe", cp.Dedupe.File)
	switch how {
	case "flipped byte":
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[cp.Dedupe.Size-2] ^= 0x10 // inside the last entry the checkpoint covers
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	case "cut below the checkpoint":
		if err := os.Truncate(path, cp.Dedupe.Size-1); err != nil {
			t.Fatal(err)
		}
	case "deleted":
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("damage %q", how)
	}
	return cp.Dedupe.File
}

// TestIdempotencyKeysRebuiltAfterDamage: a key produced and checkpointed, its idempotency file
// then damaged inside the checkpoint's durable range (a flipped byte, a cut below the
// checkpoint's size, the file deleted): the broker opens, sets the file aside under repair/,
// rebuilds the keys from its commit log, says so at Error and in Stats, and a retry of the key
// is answered as a duplicate with the first offsets, with one copy stored; also after another
// restart. (The store used to cut the file there silently, forgetting the key, and the retry
// stored a second copy; a deleted file refused to open.)
func TestIdempotencyKeysRebuiltAfterDamage(t *testing.T) {
	for _, how := range []string{"flipped byte", "cut below the checkpoint", "deleted"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			b := mustOpen(t, manualOptions(t, dir))
			mustCreate(t, b, "t", 2)
			req := []Message{{Value: []byte("pay-1"), Partition: -1}, {Value: []byte("pay-2"), Partition: -1}}
			first, err := b.Produce(context.Background(), "t", req, "order-42")
			if err != nil || first.Duplicate {
				t.Fatalf("first: %+v %v", first, err)
			}
			if err := b.Close(); err != nil { // the checkpoint covers the key's entry
				t.Fatal(err)
			}
			file := damageDedupe(t, dir, how)

			logs := &logBuffer{}
			o := manualOptions(t, dir)
			o.Logger = slog.New(slog.NewTextHandler(logs, nil))
			b, err = Open(o)
			if err != nil {
				t.Fatalf("open after damage: %v", err)
			}
			out := logs.String()
			if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, "rebuilt from the commit log") || !strings.Contains(out, file) {
				t.Errorf("no Error line naming %s and the rebuild:\n%s", file, out)
			}
			if strings.Contains(out, "cannot be known") {
				t.Errorf("the log holds the whole window, yet the line says keys are unknown:\n%s", out)
			}
			if n := b.Stats().IdempotencyDamaged; n != 1 {
				t.Errorf("Stats().IdempotencyDamaged = %d, want 1", n)
			}
			if how != "deleted" {
				copies, _ := filepath.Glob(filepath.Join(dir, "repair", "*", "dedupe", file))
				if len(copies) != 1 {
					t.Errorf("copies of the damaged file under repair/: %v", copies)
				}
			}
			retry := func(b *Broker) {
				t.Helper()
				again, err := b.Produce(context.Background(), "t", req, "order-42")
				if err != nil || !again.Duplicate || fmt.Sprint(again.Offsets) != fmt.Sprint(first.Offsets) {
					t.Fatalf("retry: %+v %v; want a duplicate at %v", again, err, first.Offsets)
				}
				if n := len(fetchAll(t, b, "t", 0)) + len(fetchAll(t, b, "t", 1)); n != 2 {
					t.Fatalf("topic holds %d messages, want one copy of 2", n)
				}
			}
			retry(b)
			b.abandon() // no checkpoint at close: the one Open wrote holds the rebuilt keys
			b = mustOpen(t, manualOptions(t, dir))
			defer b.Close()
			if n := b.Stats().IdempotencyDamaged; n != 0 {
				t.Errorf("second open: Stats().IdempotencyDamaged = %d, want 0", n)
			}
			retry(b)
		})
	}
}

// TestIdempotencyRebuildAfterRetention: when retention already deleted the start of the log
// within the idempotency window, the rebuild cannot know the keys of the deleted batches, and
// its Error line says so.
func TestIdempotencyRebuildAfterRetention(t *testing.T) {
	dir := t.TempDir()
	b := mustOpen(t, retentionOptions(t, dir, nil))
	mustCreate(t, b, "t", 1)
	var last ProduceResult
	for i := range 40 {
		res, err := b.Produce(context.Background(), "t", []Message{msg(strings.Repeat("x", 200))}, fmt.Sprintf("k-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		last = res
	}
	if err := b.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	b.EnforceRetention()
	if err := b.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if b.log.start() == 0 {
		t.Fatal("retention deleted no segment")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	damageDedupe(t, dir, "deleted")
	logs := &logBuffer{}
	b = mustOpen(t, retentionOptions(t, dir, logs))
	defer b.Close()
	if out := logs.String(); !strings.Contains(out, "keys older than the log's start cannot be known") {
		t.Errorf("the Error line does not say that keys before the log's start are unknown:\n%s", out)
	}
	// The last key's batch is still in the log: rebuilt.
	again, err := b.Produce(context.Background(), "t", []Message{msg(strings.Repeat("x", 200))}, "k-39")
	if err != nil || !again.Duplicate || again.Offsets[0] != last.Offsets[0] {
		t.Fatalf("retry of the last key: %+v %v, want a duplicate at %v", again, err, last.Offsets)
	}
}

// TestReplicatedIdempotencyKeysRebuiltAfterDamage: a cluster member opens through the same
// path: its damaged idempotency file is set aside and the keys rebuilt from its raft log.
func TestReplicatedIdempotencyKeysRebuiltAfterDamage(t *testing.T) {
	dir := t.TempDir()
	o := manualOptions(t, dir)
	o.Replicated = true
	b := mustOpen(t, o)
	p := &loopProposer{b: b, term: 1}
	b.SetProposer(p)
	if _, err := b.CreateTopic("t", TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	first, err := b.Produce(context.Background(), "t", []Message{msg("payment-1")}, "order-1")
	if err != nil || first.Duplicate {
		t.Fatalf("first: %+v %v", first, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	damageDedupe(t, dir, "flipped byte")

	b, err = Open(o)
	if err != nil {
		t.Fatalf("open after damage: %v", err)
	}
	defer b.Close()
	if n := b.Stats().IdempotencyDamaged; n != 1 {
		t.Errorf("Stats().IdempotencyDamaged = %d, want 1", n)
	}
	p = &loopProposer{b: b, term: 2, next: b.RaftLog().LastIndex()}
	b.SetProposer(p)
	again, err := b.Produce(context.Background(), "t", []Message{msg("payment-1")}, "order-1")
	if err != nil || !again.Duplicate || fmt.Sprint(again.Offsets) != fmt.Sprint(first.Offsets) {
		t.Fatalf("retry: %+v %v; want a duplicate at %v", again, err, first.Offsets)
	}
	if n := len(fetchAll(t, b, "t", 0)); n != 1 {
		t.Fatalf("partition holds %d messages, want 1", n)
	}
}

// TestIdempotencyRebuildRepeatsAfterFailedOpen: the damaged file is older than the checkpointed
// one; the start that sets it aside and cuts it dies before its checkpoint is written (the
// checkpoint's fsync fails here through the fsync seam, a fake: a real disk does not fail on
// cue). The cut file no longer shows the damage, so the next start must still rebuild (the
// store's rebuild-pending marker) and answer the key's retry as a duplicate.
func TestIdempotencyRebuildRepeatsAfterFailedOpen(t *testing.T) {
	now := time.Now()
	var mu sync.Mutex
	dir := t.TempDir()
	o := manualOptions(t, dir)
	o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	first, err := b.Produce(context.Background(), "t", []Message{msg("payment-1")}, "order-1")
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour) // past the store's rotation (window/24): the next key starts a new file
	mu.Unlock()
	if _, err := b.Produce(context.Background(), "t", []Message{msg("payment-2")}, "order-2"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	cp, err := loadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "dedupe", "*.dedupe"))
	if len(names) != 2 || filepath.Base(names[1]) != cp.Dedupe.File {
		t.Fatalf("idempotency files %v, checkpoint names %s", names, cp.Dedupe.File)
	}
	raw, err := os.ReadFile(names[0])
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-2] ^= 0x10
	if err := os.WriteFile(names[0], raw, 0o644); err != nil {
		t.Fatal(err)
	}

	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if ev.Kind == fsutil.File && strings.HasPrefix(filepath.Base(ev.Path), checkpointFileName) {
			return errors.New("injected: checkpoint fsync fails")
		}
		return do()
	})
	_, err = Open(o)
	restore()
	if err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("open with a failing checkpoint fsync: %v", err)
	}
	if st, _ := os.Stat(names[0]); st == nil || st.Size() >= int64(len(raw)) {
		t.Fatalf("the failed open did not cut the damaged file (%v): the test does not test the repeat", st)
	}

	b = mustOpen(t, o)
	defer b.Close()
	if n := b.Stats().IdempotencyDamaged; n == 0 {
		t.Errorf("the start after the failed one did not rebuild")
	}
	again, err := b.Produce(context.Background(), "t", []Message{msg("payment-1")}, "order-1")
	if err != nil || !again.Duplicate || again.Offsets[0] != first.Offsets[0] {
		t.Fatalf("retry: %+v %v; want a duplicate at %v", again, err, first.Offsets)
	}
}
