package broker

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// A checkpoint's index fsync fails (EIO: Linux may mark the dirty pages clean and report the
// error once). The checkpointer keeps ticking and Close checkpoints too: none of them may
// write a checkpoint, since a retried fsync "succeeds" without the lost pages. With the pages
// gone (simulated by zeroing one, as the disk would hold it), the restart must replay the log
// after the old checkpoint and serve every acknowledged message.
func TestIndexFsyncFailureEndsCheckpoints(t *testing.T) {
	dir := t.TempDir()
	o := manualOptions(t, dir)
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	ctx := context.Background()
	for i := 0; i < 400; i++ {
		if _, err := b.Produce(ctx, "t", []Message{msg("m")}, ""); err != nil {
			t.Fatal(err)
		}
	}
	before, err := loadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	indexFile := fileSyncUnder(filepath.Join(dir, "index"))
	failed := false
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if indexFile(ev) && !failed {
			failed = true
			return syscall.EIO // nothing written back
		}
		return do()
	})
	defer restore()
	err = b.checkpoint()
	if err == nil {
		t.Fatal("checkpoint succeeded")
	}
	b.stopWrites(err) // what runCheckpointer does
	b.Close()         // checkpoints again: the retried index fsync is trusted
	restore()
	after, err := loadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if after.Position != before.Position {
		t.Errorf("checkpoint moved from %d to %d after an index fsync failed: the retried fsync was trusted", before.Position, after.Position)
	}
	// What the disk holds for the index pages whose writeback failed: nothing.
	path := filepath.Join(dir, "index", "t-0", indexName(0))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b = mustOpen(t, o)
	defer b.Close()
	if _, err := b.Fetch(ctx, "t", 0, FetchOptions{Offset: 0, MaxMessages: 10}); err != nil {
		t.Fatalf("acknowledged message 0, in the log, is unreadable after restart: %v", err)
	}
}
