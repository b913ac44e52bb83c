package broker

import (
	"context"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// TestFailMarkAfterCheckpointFailure: a periodic checkpoint fails (an index fsync, say) while
// the flusher waits in the log's fdatasync, and then that fdatasync fails too. The produce is
// answered "storage failed" (not stored), so its bytes, still in the page cache, must be cut at
// the restart: the fail mark has to be recorded although the broker had already stopped writes
// for the checkpoint. Otherwise the restart serves the request the client was told failed, and
// the client's retry makes a second copy.
func TestFailMarkAfterCheckpointFailure(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	produceN(t, b, 1)

	// The hook: the next log fdatasync waits until released and then fails (nothing written
	// back); index fsyncs fail once failIndex is set.
	logFile := fileSyncUnder(filepath.Join(dir, "log"))
	indexFile := fileSyncUnder(filepath.Join(dir, "index"))
	var (
		mu        sync.Mutex
		held      bool
		failIndex bool
	)
	entered, release := make(chan struct{}), make(chan struct{})
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		mu.Lock()
		hold := !held && logFile(ev)
		held = held || hold
		fi := failIndex && indexFile(ev)
		mu.Unlock()
		if hold {
			close(entered)
			<-release
			return syscall.EIO
		}
		if fi {
			return syscall.EIO
		}
		return do()
	})
	defer restore()
	errc := make(chan error, 1)
	go func() {
		_, err := b.Produce(context.Background(), "t", []Message{msg("failed")}, "")
		errc <- err
	}()
	<-entered // written, in fdatasync
	mu.Lock()
	failIndex = true
	mu.Unlock()
	err := b.checkpoint()
	if err == nil {
		t.Fatal("checkpoint with a failing index fsync succeeded")
	}
	b.stopWrites(err) // what the checkpointer does
	close(release)    // the log's fdatasync fails
	if err := <-errc; err == nil {
		t.Fatal("produce acknowledged although its fsync failed")
	}
	b.abandon()
	restore()

	b = mustOpen(t, o)
	defer b.Close()
	if got := values(fetchAll(t, b, "t", 0)); len(got) != 1 {
		t.Fatalf("after the restart the partition holds %v: the request answered with a storage failure is served", got)
	}
}
