package broker

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// The bytes a start-up cuts from the log are copied to repair/ first, whatever their size, and
// the copy is made durable (file and directory) before the log is cut: otherwise a power loss
// right after the cut destroys them. If the copy cannot be made, the log is left as it is.

// tornLog writes three messages, closes the broker and appends junk bytes to the active
// segment (sparse zeros: a torn tail of the given size). It returns the segment's path and its
// size with the junk.
func tornLog(t *testing.T, dir string, junk int64) (string, int64) {
	t.Helper()
	b := mustOpen(t, testOptions(t, dir))
	mustCreate(t, b, "t", 1)
	produceN(t, b, 3)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	seg := lastSegment(t, dir)
	fi, err := os.Stat(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(seg, fi.Size()+junk); err != nil {
		t.Fatal(err)
	}
	return seg, fi.Size() + junk
}

func repairCopies(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "repair", "*", "tail-at-*.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRepairCopyOfAnySize(t *testing.T) {
	dir := t.TempDir()
	const junk = 65 << 20 // above the old 64 MiB limit
	tornLog(t, dir, junk)
	b := mustOpen(t, testOptions(t, dir))
	defer b.Close()
	wantValues(t, fetchAll(t, b, "t", 0), 3)
	copies := repairCopies(t, dir)
	if len(copies) != 1 {
		t.Fatalf("repair copies %v, want one", copies)
	}
	if fi, err := os.Stat(copies[0]); err != nil || fi.Size() != junk {
		t.Fatalf("repair copy %v: %v, want %d bytes", fi, err, junk)
	}
}

func TestRepairCopyIsDurable(t *testing.T) {
	dir := t.TempDir()
	tornLog(t, dir, 100)
	var mu sync.Mutex
	var files, dirs []string
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		mu.Lock()
		if ev.Kind == fsutil.File {
			files = append(files, ev.Path)
		} else {
			dirs = append(dirs, filepath.Clean(ev.Path))
		}
		mu.Unlock()
		return do()
	})
	b := mustOpen(t, testOptions(t, dir))
	restore()
	defer b.Close()
	copies := repairCopies(t, dir)
	if len(copies) != 1 {
		t.Fatalf("repair copies %v, want one", copies)
	}
	synced := false
	for _, f := range files {
		synced = synced || f == copies[0]
	}
	dirSynced := false
	for _, d := range dirs {
		dirSynced = dirSynced || d == filepath.Dir(copies[0])
	}
	if !synced || !dirSynced {
		t.Fatalf("repair copy %s: file fsync'd %v, its directory fsync'd %v", copies[0], synced, dirSynced)
	}
}

func TestRepairCopyFailureStopsTheCut(t *testing.T) {
	dir := t.TempDir()
	seg, size := tornLog(t, dir, 100)
	repair := filepath.Join(dir, "repair") + string(filepath.Separator)
	f := injectSyncFaults(t, func(ev fsutil.Event) bool {
		return strings.HasPrefix(filepath.Clean(ev.Path)+string(filepath.Separator), repair)
	})
	if b, err := Open(testOptions(t, dir)); err == nil {
		b.Close()
		t.Fatal("open cut the log although the copy of the cut bytes could not be made durable")
	}
	if f.count() == 0 {
		t.Fatal("no sync under repair/ was attempted")
	}
	if fi, err := os.Stat(seg); err != nil || fi.Size() != size {
		t.Fatalf("segment after the refused cut: %v %v, want %d bytes untouched", fi, err, size)
	}
	f.set(nil)
	b := mustOpen(t, testOptions(t, dir))
	defer b.Close()
	wantValues(t, fetchAll(t, b, "t", 0), 3)
}
