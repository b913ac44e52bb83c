package offsetdb

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// TestFileStoreNewLogNameIsDurable: a file store on a new directory makes the directory and the
// offset log's name durable before the first commit is acknowledged, so a power loss cannot take
// the file with acknowledged offsets. The fsutil hook records directory syncs (a real power loss
// cannot be staged on cue).
func TestFileStoreNewLogNameIsDurable(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "data", "offsets")
	var mu sync.Mutex
	synced := map[string]int{}
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if ev.Kind == fsutil.Dir {
			mu.Lock()
			synced[ev.Path]++
			mu.Unlock()
		}
		return do()
	})
	defer restore()
	s := openFileT(t, dir)
	defer s.Close()
	if err := s.Commit(context.Background(), []Offset{{Group: "g", Topic: "t", Partition: 0, Next: 1}}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, d := range []string{parent, filepath.Join(parent, "data"), dir} {
		if synced[d] == 0 {
			t.Errorf("directory %s was never synced after an entry was created in it (synced: %v)", d, synced)
		}
	}
}
