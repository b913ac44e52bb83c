package broker

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
	"github.com/imagomq/imago/internal/powerloss"
)

// powerLoss is the in-process power-loss harness: every fsync and directory sync goes through
// a recorder (internal/powerloss), and a test can hold one chosen sync (a process stuck in
// fdatasync), "kill" the broker there and drop everything no sync covered.
type powerLoss struct {
	t   *testing.T
	rec *powerloss.Recorder

	mu      sync.Mutex
	blocker *blockedSync
}

type blockedSync struct {
	match   func(fsutil.Event) bool
	held    chan struct{}
	release chan error
}

func newPowerLoss(t *testing.T) *powerLoss {
	t.Helper()
	h := &powerLoss{t: t, rec: powerloss.New()}
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		h.mu.Lock()
		bl := h.blocker
		if bl != nil && bl.match(ev) {
			h.blocker = nil
		} else {
			bl = nil
		}
		h.mu.Unlock()
		if bl != nil {
			close(bl.held)
			if err := <-bl.release; err != nil {
				return err // the sync never happened
			}
		}
		return h.rec.Hook(ev, do)
	})
	t.Cleanup(restore)
	return h
}

// holdNext holds the next sync that match accepts, before it reaches the disk. held is closed
// once it is held; release lets it go (nil: the sync runs; an error: it fails unsynced).
func (h *powerLoss) holdNext(match func(fsutil.Event) bool) (held <-chan struct{}, release func(error)) {
	bl := &blockedSync{match: match, held: make(chan struct{}), release: make(chan error, 1)}
	h.mu.Lock()
	h.blocker = bl
	h.mu.Unlock()
	var once sync.Once
	return bl.held, func(err error) { once.Do(func() { bl.release <- err }) }
}

// logSync matches a sync of a commit-log segment of the broker in dir.
func logSync(dir string) func(fsutil.Event) bool {
	logDir := filepath.Join(dir, "log") + string(filepath.Separator)
	return func(ev fsutil.Event) bool {
		return ev.Kind == fsutil.File && strings.HasPrefix(ev.Path, logDir)
	}
}

// kill leaves b as kill -9 would, as far as another broker opening its directory can tell: the
// directory lock is released and nothing more is flushed, synced or checkpointed. b's
// goroutines stay where they are (a held sync stays held) until the test lets them go.
func kill(b *Broker) {
	b.lock.Close()
}

// drop simulates a power loss on dir.
func (h *powerLoss) drop(dir string) powerloss.Loss {
	h.t.Helper()
	loss, err := h.rec.Drop(dir)
	if err != nil {
		h.t.Fatalf("power loss: %v", err)
	}
	h.t.Logf("power loss: %d files cut (%d bytes), names dropped: %v", loss.Truncated, loss.Bytes, loss.Removed)
	return loss
}

// TestRestartSyncsWhatItServes: kill -9 while the flusher waits in fdatasync, restart: the
// batch it was writing is in the page cache, so recovery finds it and a retry of its
// Idempotency-Key is answered "duplicate". That answer is a promise that the payment is stored,
// so recovery must have made it durable before answering: after a power loss the message must
// still be there, where the duplicate answer said.
func TestRestartSyncsWhatItServes(t *testing.T) {
	h := newPowerLoss(t)
	dir := t.TempDir()
	o := manualOptions(t, dir)
	ctx := context.Background()
	a := mustOpen(t, o)
	mustCreate(t, a, "t", 1)
	produceN(t, a, 3)
	if err := a.checkpoint(); err != nil {
		t.Fatal(err)
	}
	pay := []Message{msg("payment-1")}

	held, release := h.holdNext(logSync(dir))
	firstErr := make(chan error, 1)
	go func() {
		_, err := a.Produce(ctx, "t", pay, "order-1")
		firstErr <- err
	}()
	<-held // written, not yet synced: the process dies here
	kill(a)
	defer func() {
		release(syscall.EIO) // the old process's fdatasync never completes
		if err := <-firstErr; err == nil {
			t.Errorf("the killed broker acknowledged the payment although its fsync failed")
		}
		a.abandon()
	}()

	b := mustOpen(t, o)
	res, err := b.Produce(ctx, "t", pay, "order-1")
	if err != nil || !res.Duplicate || len(res.Offsets) != 1 {
		t.Fatalf("retry after restart: %+v %v (the batch is in the page cache: want duplicate)", res, err)
	}
	kill(b) // and then the power goes
	h.drop(dir)
	b.abandon()

	c := mustOpen(t, o)
	defer c.Close()
	got := fetchAll(t, c, "t", 0)
	if len(got) != 4 || string(got[3].Value) != "payment-1" || got[3].Offset != res.Offsets[0].Offset {
		t.Fatalf("after the power loss the topic holds %v: the payment answered \"duplicate\" at offset %d is gone",
			values(got), res.Offsets[0].Offset)
	}
	again, err := c.Produce(ctx, "t", pay, "order-1")
	if err != nil || !again.Duplicate || again.Offsets[0] != res.Offsets[0] {
		t.Fatalf("retry after the power loss: %+v %v", again, err)
	}
}
