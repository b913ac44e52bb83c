package broker

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// TestCheckpointsNeverOverlap forces the overlap the periodic checkpointer and retention can
// produce: the first checkpoint is held inside the fsync of an index segment it took the dirty
// flag from, and a second checkpoint is started meanwhile. A second checkpoint that runs then
// publishes a checkpoint.json claiming index entries durable that no fsync has covered yet (a
// power loss at that moment leaves consumers on ErrCorrupt), and both race on one temporary
// file. Checkpoints must run one at a time, each completing, and the file on disk must be the
// newest one, matching what the broker believes it wrote.
func TestCheckpointsNeverOverlap(t *testing.T) {
	o := testOptions(t, t.TempDir())
	o.CheckpointInterval = time.Hour // only the test checkpoints
	b := mustOpen(t, o)
	defer b.Close()
	mustCreate(t, b, "t", 1)
	produceN(t, b, 3)

	held := make(chan struct{})
	release := make(chan struct{})
	var holding, released atomic.Bool
	var published []string // checkpoint files made durable while the first was held
	var mu sync.Mutex
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if ev.Kind == fsutil.File && strings.HasSuffix(ev.Path, ".idx") && holding.CompareAndSwap(false, true) {
			close(held)
			<-release
		} else if holding.Load() && !released.Load() && strings.Contains(ev.Path, checkpointFileName) {
			mu.Lock()
			published = append(published, ev.Path)
			mu.Unlock()
		}
		return do()
	})
	defer restore()

	first := make(chan error, 1)
	go func() { first <- b.checkpoint() }()
	<-held
	produceN(t, b, 1) // the second checkpoint has a newer position to write
	second := make(chan error, 1)
	go func() { second <- b.checkpoint() }()
	// A correct broker makes the second checkpoint wait for the first: give the overlap a
	// bounded chance to happen, then let the first go on.
	select {
	case err := <-second:
		second <- err
	case <-time.After(300 * time.Millisecond):
	}
	released.Store(true)
	close(release)
	if err := <-first; err != nil {
		t.Errorf("first checkpoint: %v", err)
	}
	if err := <-second; err != nil {
		t.Errorf("second checkpoint: %v", err)
	}
	mu.Lock()
	if len(published) > 0 {
		t.Errorf("a checkpoint was written (%v) while another one's index fsync was still running", published)
	}
	mu.Unlock()
	restore()

	cp, err := loadCheckpoint(o.Dir)
	if err != nil || cp == nil {
		t.Fatalf("checkpoint.json after two checkpoints: %v", err)
	}
	b.stateMu.Lock()
	applied := b.appliedPos
	b.stateMu.Unlock()
	if cp.Position != applied || b.lastCkptPos.Load() != cp.Position {
		t.Fatalf("checkpoint.json at %d, broker believes %d, log applied to %d: the newest checkpoint must win",
			cp.Position, b.lastCkptPos.Load(), applied)
	}
}

// TestConcurrentCheckpointStress runs the periodic checkpointer's and retention's calls side by
// side with produces (under -race in CI): every checkpoint succeeds and the file always parses.
func TestConcurrentCheckpointStress(t *testing.T) {
	o := testOptions(t, t.TempDir())
	o.CheckpointInterval = time.Hour
	b := mustOpen(t, o)
	defer b.Close()
	mustCreate(t, b, "t", 2)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				if _, err := b.Produce(ctx, "t", []Message{{Value: []byte(fmt.Sprintf("w%d-%d", w, i)), Partition: -1}}, ""); err != nil {
					t.Error(err)
					return
				}
				switch w {
				case 0:
					b.EnforceRetention()
				default:
					if err := b.checkpoint(); err != nil {
						t.Errorf("checkpoint: %v", err)
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	cp, err := loadCheckpoint(o.Dir)
	if err != nil || cp == nil || cp.Position != b.lastCkptPos.Load() {
		t.Fatalf("checkpoint.json %+v (%v), broker believes %d", cp, err, b.lastCkptPos.Load())
	}
}
