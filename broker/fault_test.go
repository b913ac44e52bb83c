package broker

import (
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// Fault injection for the storage tests. A real disk cannot be made to fail one chosen fsync on
// demand, so these helpers go through internal/fsutil's process-wide hook (the only fake in
// these tests): the sync is answered with EIO and nothing is written back, which is what Linux
// does after a writeback error. Tests that install a hook must not run in parallel.

// syncFault decides, per sync, whether it fails. Safe for concurrent use.
type syncFault struct {
	mu    sync.Mutex
	match func(ev fsutil.Event) bool
	hits  int
	// hold, when set, makes the next sync it accepts wait for release (after sending on
	// entered): a flusher stuck in fdatasync, so that requests queue behind it.
	hold     func(ev fsutil.Event) bool
	entered  chan struct{}
	released chan struct{}
}

// injectSyncFaults installs a hook that fails every sync match accepts (nil: none yet) with EIO.
// It is removed when the test ends.
func injectSyncFaults(t *testing.T, match func(ev fsutil.Event) bool) *syncFault {
	t.Helper()
	f := &syncFault{match: match}
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		f.mu.Lock()
		m := f.match
		fail := m != nil && m(ev)
		if fail {
			f.hits++
		}
		var wait chan struct{}
		if f.hold != nil && f.hold(ev) {
			f.hold = nil
			wait = f.released
			f.entered <- struct{}{}
		}
		f.mu.Unlock()
		if wait != nil {
			<-wait
		}
		if fail {
			return syscall.EIO
		}
		return do()
	})
	t.Cleanup(restore)
	return f
}

func (f *syncFault) set(match func(ev fsutil.Event) bool) {
	f.mu.Lock()
	f.match = match
	f.mu.Unlock()
}

// holdNext makes the next sync that match accepts block until release is called; it returns a
// channel that receives once that sync has begun.
func (f *syncFault) holdNext(match func(ev fsutil.Event) bool) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = match
	f.entered = make(chan struct{}, 1)
	f.released = make(chan struct{})
	return f.entered
}

func (f *syncFault) release() { close(f.released) }

func (f *syncFault) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits
}

// dirSyncUnder matches directory syncs of dir or anything below it.
func dirSyncUnder(dir string) func(fsutil.Event) bool {
	dir = filepath.Clean(dir)
	return func(ev fsutil.Event) bool {
		p := filepath.Clean(ev.Path)
		return ev.Kind == fsutil.Dir && (p == dir || strings.HasPrefix(p, dir+string(filepath.Separator)))
	}
}

// fileSyncUnder matches file syncs of files below dir.
func fileSyncUnder(dir string) func(fsutil.Event) bool {
	dir = filepath.Clean(dir) + string(filepath.Separator)
	return func(ev fsutil.Event) bool {
		return ev.Kind == fsutil.File && strings.HasPrefix(filepath.Clean(ev.Path), dir)
	}
}

// queued returns how many produce requests wait for the flusher.
func queued(b *Broker) int {
	b.qmu.Lock()
	defer b.qmu.Unlock()
	return len(b.queue)
}

// waitFor polls cond (a state another goroutine changes without a channel to wait on) until it
// holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// eachLazyFsync runs f for fsync interval and for fsync never, each on a directory of its own with
// manualOptions and no periodic fsync during the test (the interval is an hour): the modes in
// which a request is acknowledged once written, before any fsync.
func eachLazyFsync(t *testing.T, f func(t *testing.T, dir string, o Options)) {
	for _, mode := range []FsyncMode{FsyncInterval, FsyncNever} {
		t.Run(FsyncPolicy{Mode: mode, Interval: time.Hour}.String(), func(t *testing.T) {
			dir := t.TempDir()
			o := manualOptions(t, dir)
			o.Fsync = FsyncPolicy{Mode: mode, Interval: time.Hour}
			f(t, dir, o)
		})
	}
}
