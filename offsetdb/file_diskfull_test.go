package offsetdb

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imagomq/imago/internal/tmpfs"
)

// The file store on a full disk, on a tmpfs mounted by the test (internal/tmpfs; root only,
// skipped elsewhere): a tmpfs runs out of space or inodes exactly when told to.

// TestFileStoreDiskFull commits until the full disk refuses one: that commit and every later
// one fail naming the log, and after space is freed and the store reopened every acknowledged
// offset is there (a refused commit may have left some of its offsets, never less than the
// acknowledged ones).
func TestFileStoreDiskFull(t *testing.T) {
	dir := filepath.Join(tmpfs.Mount(t, "1m"), "offsets")
	s := openFileT(t, dir)
	t.Cleanup(func() { s.Close() }) // before the unmount
	keys := []Key{{"g", "t", 0}, {"g", "t", 1}, {"g", "u", 0}}
	acked := map[Key]int64{}
	commit := func(next int64) error {
		var offs []Offset
		for _, k := range keys {
			offs = append(offs, Offset{Group: k.Group, Topic: k.Topic, Partition: k.Partition, Next: next})
		}
		err := s.Commit(context.Background(), offs)
		if err == nil {
			for _, k := range keys {
				acked[k] = next
			}
		}
		return err
	}
	if err := commit(1); err != nil {
		t.Fatal(err)
	}
	free := tmpfs.Fill(t, filepath.Dir(dir), 0)
	var err error
	next := int64(2)
	for ; next < 10000; next++ {
		if err = commit(next); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), fileLogName) {
		t.Fatalf("commit %d on a full disk: %v; want ENOSPC naming %s", next, err, fileLogName)
	}
	// The shape an operator reads: the store, the operation and the file once, then the cause.
	want := "offsetdb: file store: write " + filepath.Join(dir, fileLogName) + ": no space left on device"
	if err.Error() != want {
		t.Fatalf("commit on a full disk: %q, want %q", err, want)
	}
	failedAt := next
	if err := commit(next + 1); err == nil {
		t.Fatal("a commit after a failed write was acknowledged")
	}
	s.Close()
	free()

	s = openFileT(t, dir)
	defer s.Close()
	for _, k := range keys {
		o := mustGet(t, s, k.Group, k.Topic, k.Partition)
		if o.Next < acked[k] || o.Next > failedAt {
			t.Errorf("%v after the restart: %d; acknowledged %d, refused %d", k, o.Next, acked[k], failedAt)
		}
	}
	mustCommit(t, s, Offset{Group: "g", Topic: "t", Partition: 0, Next: failedAt + 10})
}

// TestFileStoreCompactionDiskFull: a compaction that cannot write its new log for lack of space
// (or create it for lack of inodes) leaves the store as it was: commits go on being
// acknowledged in the space there is, and a half-written temporary file does not keep the
// space it took.
func TestFileStoreCompactionDiskFull(t *testing.T) {
	for _, c := range []struct {
		name string
		full func(t *testing.T, mnt string) (free func())
	}{
		// Two pages free: the new log (three pages) takes them and fails.
		{"space", func(t *testing.T, mnt string) func() { return tmpfs.Fill(t, mnt, 8<<10) }},
		{"inodes", func(t *testing.T, mnt string) func() { return tmpfs.NoInodes(t, mnt) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			mnt := tmpfs.Mount(t, "1m")
			dir := filepath.Join(mnt, "offsets")
			s := openFileT(t, dir)
			t.Cleanup(func() { s.Close() }) // before the unmount
			s.slack = 0
			// 100 keys (about 10 KiB compacted), and records up to the compaction threshold.
			var offs []Offset
			for p := range 100 {
				offs = append(offs, Offset{Group: "group-with-a-long-name", Topic: "topic-with-a-long-name", Partition: p, Next: 1})
			}
			mustCommit(t, s, offs...)
			next := int64(2)
			for s.records < 4*len(s.offsets) {
				mustCommit(t, s, Offset{Group: "g", Topic: "t", Partition: 0, Next: next})
				next++
			}
			free := c.full(t, mnt)
			// Every commit from here tries to compact and fails; the log's own appends fit in
			// the space the failed compaction had taken (with a full last page of the log,
			// about 100 bytes a commit).
			for range 60 {
				mustCommit(t, s, Offset{Group: "g", Topic: "t", Partition: 0, Next: next})
				next++
			}
			if _, err := os.Stat(filepath.Join(dir, fileLogName+".tmp")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the failed compaction's temporary file is still there (%v)", err)
			}
			s.Close()
			free()
			s = openFileT(t, dir)
			defer s.Close()
			if o := mustGet(t, s, "g", "t", 0); o.Next != next-1 {
				t.Fatalf("after reopening: %d, want %d", o.Next, next-1)
			}
			if o := mustGet(t, s, "group-with-a-long-name", "topic-with-a-long-name", 99); o.Next != 1 {
				t.Fatalf("after reopening: %d, want 1", o.Next)
			}
		})
	}
}
