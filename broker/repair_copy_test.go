package broker

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
	"github.com/imagomq/imago/internal/tmpfs"
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
		synced = synced || f == copies[0] || f == copies[0]+partialSuffix // fsync'd, then renamed
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

// TestRepairCopyDiskFull: on a full disk (a real tmpfs, mounted by the test: root only) the copy
// of a torn tail fails, and so does the start, again at every retry. No attempt may leave its
// partial copy behind (nor the one of an attempt killed while copying): each would take space
// the next needs, and repair/ would fill with copies that look like kept bytes. Once space is
// back the start cuts the tail, with one whole copy.
func TestRepairCopyDiskFull(t *testing.T) {
	mnt := tmpfs.Mount(t, "16m") // the broker's files take about 6 MiB
	dir := filepath.Join(mnt, "data")
	const junk = 3 << 20 // sparse: it takes no space in the log, 3 MiB in its copy
	seg, size := tornLog(t, dir, junk)
	// What an attempt killed while copying leaves (the next attempt removes it).
	killed := filepath.Join(dir, "repair", "1", "tail-at-00000000000000000279.bin"+partialSuffix)
	if err := os.MkdirAll(filepath.Dir(killed), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(killed, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	free := tmpfs.Fill(t, mnt, 1<<20)
	avail := func() int64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(mnt, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Bavail) * int64(st.Bsize)
	}
	before := avail()
	for i := range 3 {
		b, err := Open(testOptions(t, dir))
		if err == nil {
			b.Close()
			t.Fatal("open cut the torn tail although its copy cannot fit")
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("attempt %d on a full disk: %v, want ENOSPC", i, err)
		}
		left, _ := filepath.Glob(filepath.Join(dir, "repair", "*"))
		if len(left) > 0 || avail() != before {
			t.Fatalf("after failed attempt %d: repair/ holds %v, %d bytes free of %d before", i, left, avail(), before)
		}
	}
	if fi, err := os.Stat(seg); err != nil || fi.Size() != size {
		t.Fatalf("segment after the refused cuts: %v %v, want %d bytes untouched", fi, err, size)
	}
	free()
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
