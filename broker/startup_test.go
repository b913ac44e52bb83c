package broker

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPowerLossAfterFirstWrites: a new data directory (and its parents), the log and index
// directories are created with their names made durable, so that a power loss right after the
// first acknowledged produces keeps them.
func TestPowerLossAfterFirstWrites(t *testing.T) {
	h := newPowerLoss(t)
	root := t.TempDir()
	dir := filepath.Join(root, "var", "imago")
	o := testOptions(t, dir)
	o.CheckpointInterval = time.Hour
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	produceN(t, b, 3)
	kill(b)
	h.drop(root)
	b.abandon()
	b = mustOpen(t, o)
	defer b.Close()
	wantValues(t, fetchAll(t, b, "t", 0), 3)
}

// TestUnreadableCheckpointStopsStartup: an unreadable checkpoint.json is not "no checkpoint".
// Treated so, the idempotency store was opened empty (its files deleted) and retried payments
// whose batches retention had deleted were stored twice. Start-up stops and says what to do.
func TestUnreadableCheckpointStopsStartup(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	produceN(t, b, 2)
	b.Close()
	path := filepath.Join(dir, checkpointFileName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for name, damage := range map[string][]byte{
		"torn":    good[:len(good)/2],
		"garbage": []byte("\x00\x01 not json"),
		"version": []byte(`{"version":99}`),
	} {
		if err := os.WriteFile(path, damage, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := Open(o)
		if err == nil {
			b.Close()
			t.Fatalf("%s checkpoint.json: the broker started", name)
		}
		if !strings.Contains(err.Error(), checkpointFileName) {
			t.Errorf("%s checkpoint.json: error %q does not name the file", name, err)
		}
	}
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, o)
	defer b.Close()
	wantValues(t, fetchAll(t, b, "t", 0), 2)
}

// TestReplayAfterClockSteppedBack: a key used again after its window expired is a new request
// with other messages. When the wall clock has stepped back before the restart, replay sees
// both uses within the window; it must still open, and the key answers with its latest use.
func TestReplayAfterClockSteppedBack(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := t0
	o := testOptions(t, t.TempDir())
	o.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	o.IdempotencyWindow = time.Hour
	o.CheckpointInterval = time.Hour
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	ctx := context.Background()
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	if _, err := b.Produce(ctx, "t", []Message{msg("first use")}, "k"); err != nil {
		t.Fatal(err)
	}
	set(t0.Add(2 * time.Hour))
	second, err := b.Produce(ctx, "t", []Message{msg("second use")}, "k")
	if err != nil || second.Duplicate {
		t.Fatalf("the key after its window: %+v %v", second, err)
	}
	b.abandon() // both batches are replayed at the next start
	set(t0.Add(30 * time.Minute))
	b, err = Open(o)
	if err != nil {
		t.Fatalf("open after the clock stepped back: %v", err)
	}
	defer b.Close()
	set(t0.Add(2*time.Hour + time.Minute))
	again, err := b.Produce(ctx, "t", []Message{msg("second use")}, "k")
	if err != nil || !again.Duplicate || again.Offsets[0] != second.Offsets[0] {
		t.Fatalf("retry of the second use: %+v %v", again, err)
	}
}
