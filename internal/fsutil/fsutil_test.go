package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

func TestHookFailsSyncWithoutWriteback(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "a"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("hello"); err != nil {
		t.Fatal(err)
	}
	var seen []Event
	restore := SetHook(func(ev Event, do func() error) error {
		seen = append(seen, ev)
		return syscall.EIO
	})
	err = Fdatasync(f)
	restore()
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("Fdatasync under a failing hook = %v, want EIO", err)
	}
	if len(seen) != 1 || seen[0].Kind != File || seen[0].Size != 5 || seen[0].Path != f.Name() {
		t.Fatalf("hook saw %+v", seen)
	}
	// Restored: the real sync runs again.
	if err := Fdatasync(f); err != nil {
		t.Fatalf("Fdatasync after restore: %v", err)
	}
}

func TestMkdirAllSyncsEveryParentThatGotAnEntry(t *testing.T) {
	root := t.TempDir()
	var mu sync.Mutex
	var dirs []string
	restore := SetHook(func(ev Event, do func() error) error {
		mu.Lock()
		if ev.Kind == Dir {
			dirs = append(dirs, ev.Path)
		}
		mu.Unlock()
		return do()
	})
	defer restore()
	target := filepath.Join(root, "a", "b", "c")
	if err := MkdirAll(target, 0o755); err != nil {
		t.Fatal(err)
	}
	want := []string{root, filepath.Join(root, "a"), filepath.Join(root, "a", "b")}
	if len(dirs) != len(want) {
		t.Fatalf("synced dirs %v, want %v", dirs, want)
	}
	for i := range want {
		if dirs[i] != want[i] {
			t.Fatalf("synced dirs %v, want %v", dirs, want)
		}
	}
	// Existing: nothing to sync.
	dirs = nil
	if err := MkdirAll(target, 0o755); err != nil || len(dirs) != 0 {
		t.Fatalf("second MkdirAll: err %v, synced %v", err, dirs)
	}
}

func TestWriteFileAtomicConcurrentWritersNeverMix(t *testing.T) {
	dir := t.TempDir()
	a := make([]byte, 1<<16)
	b := make([]byte, 1<<15)
	for i := range a {
		a[i] = 'a'
	}
	for i := range b {
		b[i] = 'b'
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			data := a
			if i%2 == 1 {
				data = b
			}
			for j := 0; j < 20; j++ {
				if err := WriteFileAtomic(dir, "checkpoint.json", data, 0o644); err != nil {
					t.Error(err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	got, err := os.ReadFile(filepath.Join(dir, "checkpoint.json"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(a) && string(got) != string(b) {
		t.Fatalf("file holds a mix of two writers (%d bytes)", len(got))
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*.tmp-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

func TestWriteFileAtomicDirSyncFailureIsAnError(t *testing.T) {
	dir := t.TempDir()
	restore := SetHook(func(ev Event, do func() error) error {
		if ev.Kind == Dir {
			return syscall.EIO
		}
		return do()
	})
	defer restore()
	if err := WriteFileAtomic(dir, "x", []byte("1"), 0o644); !errors.Is(err, syscall.EIO) {
		t.Fatalf("WriteFileAtomic with a failing dir sync = %v, want EIO", err)
	}
}

func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"c.json.tmp-1", "c.json.tmp-2", "c.json", "other.tmp-1"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := RemoveTemps(dir, "c.json"); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != "c.json" || names[1] != "other.tmp-1" {
		t.Fatalf("left %v", names)
	}
}

func TestLockFileExcludesSecondHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "LOCK")
	f, err := LockFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockFile(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("second LockFile = %v, want ErrLocked", err)
	}
	f.Close()
	g, err := LockFile(path)
	if err != nil {
		t.Fatalf("LockFile after release: %v", err)
	}
	g.Close()
}

func TestPreallocateAllocatesWithoutChangingContents(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "idx"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("abc"); err != nil {
		t.Fatal(err)
	}
	if err := Preallocate(f, 1<<20); err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	if fi.Size() != 1<<20 {
		t.Fatalf("size %d, want %d", fi.Size(), 1<<20)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Blocks*512 < 1<<20 {
		t.Fatalf("%d bytes allocated, want >= %d (sparse file)", st.Blocks*512, 1<<20)
	}
	buf := make([]byte, 3)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "abc" {
		t.Fatalf("contents changed: %q %v", buf, err)
	}
}

// ReadFileDurable syncs the directory of what it read (a name left by a replace whose directory
// fsync never ran may be taken back by a power loss), fails when that sync fails, and returns a
// missing file as os.ErrNotExist without syncing.
func TestReadFileDurableSyncsTheName(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var synced []string
	fail := false
	restore := SetHook(func(ev Event, do func() error) error {
		if ev.Kind != Dir {
			return do()
		}
		mu.Lock()
		defer mu.Unlock()
		if fail {
			return syscall.EIO
		}
		synced = append(synced, filepath.Clean(ev.Path))
		return do()
	})
	defer restore()
	if _, err := ReadFileDurable(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want os.ErrNotExist", err)
	}
	if len(synced) != 0 {
		t.Fatalf("a missing file synced %v", synced)
	}
	if err := os.WriteFile(filepath.Join(dir, "state"), []byte("vote 3"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := ReadFileDurable(filepath.Join(dir, "state"))
	if err != nil || string(b) != "vote 3" {
		t.Fatalf("ReadFileDurable = %q, %v", b, err)
	}
	if len(synced) != 1 || synced[0] != filepath.Clean(dir) {
		t.Fatalf("directory syncs %v, want [%s]", synced, dir)
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	if _, err := ReadFileDurable(filepath.Join(dir, "state")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("with a failing directory sync: %v, want EIO", err)
	}
}
