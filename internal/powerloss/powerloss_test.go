package powerloss

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

func write(t *testing.T, path, s string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	return f
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// check runs the same scenario in-process and through a journal.
func TestDropKeepsOnlyWhatWasSynced(t *testing.T) {
	for _, mode := range []string{"in-process", "journal"} {
		t.Run(mode, func(t *testing.T) {
			root := t.TempDir()
			journal := filepath.Join(t.TempDir(), "journal")
			var rec *Recorder
			if mode == "journal" {
				var err error
				if rec, err = OpenJournal(journal); err != nil {
					t.Fatal(err)
				}
			} else {
				rec = New()
			}
			restore := rec.Install()
			sub := filepath.Join(root, "log")
			if err := fsutil.MkdirAll(sub, 0o755); err != nil { // syncs root
				t.Fatal(err)
			}
			a := write(t, filepath.Join(sub, "a"), "synced")
			if err := fsutil.SyncDir(sub); err != nil {
				t.Fatal(err)
			}
			if err := fsutil.Fdatasync(a); err != nil {
				t.Fatal(err)
			}
			a.WriteString("+lost")
			a.Close()
			write(t, filepath.Join(sub, "b"), "name never synced").Close()
			if err := fsutil.WriteFileAtomic(root, "c.json", []byte("{}"), 0o644); err != nil {
				t.Fatal(err)
			}
			write(t, filepath.Join(root, "d"), "no dir sync after").Close()
			restore()
			rec.Close()
			if mode == "journal" {
				var err error
				if rec, err = LoadJournal(journal); err != nil {
					t.Fatal(err)
				}
			}
			loss, err := rec.Drop(root)
			if err != nil {
				t.Fatal(err)
			}
			if got := size(t, filepath.Join(sub, "a")); got != int64(len("synced")) {
				t.Errorf("a has %d bytes after the power loss, want %d", got, len("synced"))
			}
			for _, gone := range []string{filepath.Join(sub, "b"), filepath.Join(root, "d")} {
				if size(t, gone) != -1 {
					t.Errorf("%s survived although its name was never synced", gone)
				}
			}
			if b, err := os.ReadFile(filepath.Join(root, "c.json")); err != nil || string(b) != "{}" {
				t.Errorf("atomically written file: %q %v", b, err)
			}
			if loss.Truncated != 1 || loss.Bytes != int64(len("+lost")) || len(loss.Removed) != 2 {
				t.Errorf("loss %+v", loss)
			}
			// Save and reload: the state after the loss is the new baseline.
			if err := rec.Baseline(root); err != nil {
				t.Fatal(err)
			}
			if err := rec.Save(journal); err != nil {
				t.Fatal(err)
			}
			again, err := LoadJournal(journal)
			if err != nil {
				t.Fatal(err)
			}
			if loss, err := again.Drop(root); err != nil || loss.Truncated != 0 || len(loss.Removed) != 0 {
				t.Fatalf("second drop after baseline: %+v %v", loss, err)
			}
		})
	}
}

// A file renamed after it was opened (a compacted log renamed into place, written on through
// the same descriptor) is synced through that descriptor, whose name is the old one: the sync
// must count for the file under its new name, not for nothing (or for a new file that took the
// old name).
func TestSyncThroughDescriptorAfterRename(t *testing.T) {
	root := t.TempDir()
	rec := New()
	restore := rec.Install()
	defer restore()
	tmp, final := filepath.Join(root, "log.compact"), filepath.Join(root, "log")
	f := write(t, tmp, "compacted")
	defer f.Close()
	if err := fsutil.Fsync(f); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, final); err != nil {
		t.Fatal(err)
	}
	if err := fsutil.SyncDir(root); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("+appended"); err != nil {
		t.Fatal(err)
	}
	if err := fsutil.Fdatasync(f); err != nil { // f.Name() is still tmp
		t.Fatal(err)
	}
	write(t, tmp, "next compaction").Close() // a new file under the old name, never synced
	if _, err := rec.Drop(root); err != nil {
		t.Fatal(err)
	}
	if got := size(t, final); got != int64(len("compacted+appended")) {
		t.Errorf("the renamed file has %d bytes after the power loss, want %d (synced through its descriptor)", got, len("compacted+appended"))
	}
}
