package xa

import (
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// TestNewDecisionLogNameIsDurable: a coordinator on a new directory makes the directory, the
// decision log's name and the node-id file durable before it takes decisions, so a power loss
// right after the first decisions cannot take the files with them. The fsutil hook records the
// directory syncs (a real power loss cannot be staged on cue).
func TestNewDecisionLogNameIsDurable(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "data", "coordinator")
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
	c, err := Open(t.Context(), Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RecoveryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mu.Lock()
	defer mu.Unlock()
	for _, d := range []string{parent, filepath.Join(parent, "data"), dir} {
		if synced[d] == 0 {
			t.Errorf("directory %s was never synced after an entry was created in it (synced: %v)", d, synced)
		}
	}
}
