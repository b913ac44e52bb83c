package broker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// retainedLog fills topic "a" of a broker with retentionOptions until retention can delete log
// segments, and checkpoints.
func retainedLog(t *testing.T, b *Broker) {
	t.Helper()
	mustCreate(t, b, "a", 1)
	for i := 0; i < 300; i++ {
		if _, err := b.Produce(context.Background(), "a", []Message{msg(fmt.Sprintf("v%d", i))}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
}

// TestRetentionDeletesDurably: the segment files retention deletes must stay deleted after a
// power loss, so the removal of their names is fsync'd (the log directory) before the pass
// ends. The test records the log directory's names at each of its syncs (what a power loss
// would leave); the power-loss harness does not model removals.
func TestRetentionDeletesDurably(t *testing.T) {
	dir := t.TempDir()
	logDir := filepath.Join(dir, "log")
	var mu sync.Mutex
	var durable []string // the log directory's names at its last sync
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if err := do(); err != nil {
			return err
		}
		if ev.Kind == fsutil.Dir && filepath.Clean(ev.Path) == logDir {
			ents, err := os.ReadDir(logDir)
			if err != nil {
				return err
			}
			mu.Lock()
			durable = durable[:0]
			for _, e := range ents {
				durable = append(durable, e.Name())
			}
			mu.Unlock()
		}
		return nil
	})
	defer restore()
	b := mustOpen(t, retentionOptions(t, dir, nil))
	defer b.Close()
	retainedLog(t, b)
	before := logSegments(t, dir)
	b.EnforceRetention()
	after := logSegments(t, dir)
	if len(after) >= len(before) {
		t.Fatalf("retention deleted no log segment (%d before, %d after)", len(before), len(after))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, s := range before {
		if !slices.Contains(after, s) && slices.Contains(durable, filepath.Base(s)) {
			t.Errorf("segment %s was deleted, but the log directory was not synced since: a power loss brings it back", filepath.Base(s))
		}
	}
}

// TestResurrectedSegmentIsNotServed: a log segment retention deleted that a power loss brought
// back (the test copies the segments aside before the pass and puts the deleted ones back
// before the restart: it stands in for a power loss that undid the unlink) lies before the
// checkpoint. The restart must not serve its messages again (the partition keeps the start the
// checkpoint recorded) and the next retention pass deletes it again.
func TestResurrectedSegmentIsNotServed(t *testing.T) {
	dir, aside := t.TempDir(), t.TempDir()
	o := retentionOptions(t, dir, nil)
	ctx := context.Background()
	a := mustOpen(t, o)
	retainedLog(t, a)
	before := logSegments(t, dir)
	for _, s := range before {
		copyFile(t, s, filepath.Join(aside, filepath.Base(s)))
	}
	a.EnforceRetention()
	info, err := a.Topic("a")
	if err != nil {
		t.Fatal(err)
	}
	start := info.Partitions[0].StartOffset
	if start == 0 {
		t.Fatal("retention let nothing go")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	var back []string
	for _, s := range before {
		if _, err := os.Stat(s); errors.Is(err, os.ErrNotExist) {
			copyFile(t, filepath.Join(aside, filepath.Base(s)), s)
			back = append(back, s)
		}
	}
	if len(back) == 0 {
		t.Fatal("retention deleted no log segment")
	}

	b := mustOpen(t, o)
	defer b.Close()
	got := fetchAll(t, b, "a", 0)
	if len(got) == 0 || got[0].Offset != start {
		t.Fatalf("after the restart partition a/0 starts at %v, want %d (the start retention recorded)", got[:min(len(got), 1)], start)
	}
	for i, m := range got {
		if m.Offset != start+int64(i) || string(m.Value) != fmt.Sprintf("v%d", m.Offset) {
			t.Fatalf("after the restart offset %d holds %q at index %d", m.Offset, m.Value, i)
		}
	}
	if _, err := b.Fetch(ctx, "a", 0, FetchOptions{Offset: start - 1}); !errors.Is(err, ErrOffsetOutOfRange) {
		t.Fatalf("fetch of retired offset %d after the restart: %v, want out of range", start-1, err)
	}
	b.EnforceRetention()
	for _, s := range back {
		if _, err := os.Stat(s); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("segment %s, back after the power loss, survives the next retention pass (%v)", filepath.Base(s), err)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
