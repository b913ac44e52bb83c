package broker

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// TestFailedIdempotencyStoreStopsWrites: once the idempotency store cannot write (an fsync of
// a dedupe file fails with EIO here; ENOSPC on rotation does the same) its error is sticky and
// nothing more is remembered. A broker that keeps acknowledging keyed produces then stores a
// retry as a second copy, with /readyz green. It must stop as after a log failure: Err() says
// why, keyed retries never make a second copy.
func TestFailedIdempotencyStoreStopsWrites(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.CheckpointInterval = time.Hour
	b := mustOpen(t, o)
	defer b.Close()
	mustCreate(t, b, "t", 1)
	ctx := context.Background()
	if _, err := b.Produce(ctx, "t", []Message{msg("first")}, "k0"); err != nil {
		t.Fatal(err)
	}
	dedupeDir := filepath.Join(dir, "dedupe") + string(filepath.Separator)
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if ev.Kind == fsutil.File && strings.HasPrefix(ev.Path, dedupeDir) {
			return syscall.EIO
		}
		return do()
	})
	defer restore()
	if err := b.checkpoint(); err == nil {
		t.Fatal("checkpoint succeeded although the idempotency store could not sync")
	}
	if b.Err() == nil {
		t.Error("Err() is nil after the idempotency store failed: /readyz stays green")
	}
	pay := []Message{msg("payment")}
	_, err1 := b.Produce(ctx, "t", pay, "k1")
	_, err2 := b.Produce(ctx, "t", pay, "k1")
	copies := 0
	for _, m := range fetchAll(t, b, "t", 0) {
		if string(m.Value) == "payment" {
			copies++
		}
	}
	if copies > 1 {
		t.Fatalf("a retried Idempotency-Key stored %d copies (answers: %v, %v)", copies, err1, err2)
	}
}
