package offsetdb

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
	"github.com/imagomq/imago/internal/powerloss"
)

// TestFileStorePowerLossTail: the shapes a power loss in the middle of the last append leaves
// behind (the append was never acknowledged: its fsync had not returned). Each must open,
// keep every earlier record, and cut the tail; a bad record followed by valid ones is still
// corruption and refused.
func TestFileStorePowerLossTail(t *testing.T) {
	rec := func(p int, n int64) string {
		return string(encodeRecord(nil, recordOf(Offset{Group: "g", Topic: "t", Partition: p, Next: n}, false)))
	}
	a, b, c := rec(0, 10), rec(1, 20), rec(0, 30)
	zeros := func(n int) string { return string(bytes.Repeat([]byte{0}, n)) }
	cases := []struct {
		name string
		log  string
		want map[int]int64 // partition -> next; nil: open must fail
	}{
		{"last record cut short", a + b + c[:len(c)/2], map[int]int64{0: 10, 1: 20}},
		{"zeros after the last record (size grew, data lost)", a + b + zeros(4096), map[int]int64{0: 10, 1: 20}},
		{"last record zeroed", a + b + zeros(len(c)), map[int]int64{0: 10, 1: 20}},
		{"last record zeroed but its newline", a + b + zeros(len(c)-1) + "\n", map[int]int64{0: 10, 1: 20}},
		{"last record half written, then zeros", a + b + c[:len(c)/2] + zeros(512), map[int]int64{0: 10, 1: 20}},
		{"last record half written, then zeros and a newline", a + b + c[:len(c)/2] + zeros(100) + "\n", map[int]int64{0: 10, 1: 20}},
		{"last record with a flipped byte", a + b + strings.Replace(c, "30", "31", 1), map[int]int64{0: 10, 1: 20}},
		{"only record torn", a[:5], map[int]int64{}},
		{"bad record, then a valid one", a + zeros(len(b)-1) + "\n" + c, nil},
		{"flipped byte in the middle", strings.Replace(a, "10", "11", 1) + b, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, fileLogName), []byte(tc.log), 0o640); err != nil {
				t.Fatal(err)
			}
			s, err := OpenFile(dir, quietLogger())
			if tc.want == nil {
				if err == nil {
					s.Close()
					t.Fatal("open succeeded; want a corruption error")
				}
				return
			}
			if err != nil {
				t.Fatalf("open: %v", err)
			}
			defer s.Close()
			for p, want := range tc.want {
				if o := mustGet(t, s, "g", "t", p); o.Next != want {
					t.Errorf("partition %d: %d, want %d", p, o.Next, want)
				}
			}
			// The tail is gone: a new commit lands after the valid records and survives a reopen.
			mustCommit(t, s, Offset{Group: "g", Topic: "t", Partition: 2, Next: 7})
			s.Close()
			s2, err := OpenFile(dir, quietLogger())
			if err != nil {
				t.Fatalf("reopen after the repair: %v", err)
			}
			defer s2.Close()
			if o := mustGet(t, s2, "g", "t", 2); o.Next != 7 {
				t.Errorf("after reopen: %d, want 7", o.Next)
			}
		})
	}

}

// TestFileStoreCompactionDirSyncFails: compaction renamed the new log over the old one, but
// the directory's fsync failed: the rename may not survive a crash, and the old log would come
// back without anything appended to the new one since. The store must fail, not log and carry
// on acknowledging commits it may lose.
func TestFileStoreCompactionDirSyncFails(t *testing.T) {
	dir := t.TempDir()
	s := openFileT(t, dir)
	defer s.Close()
	s.slack = 5
	injected := errors.New("injected: directory fsync failed")
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if ev.Kind == fsutil.Dir && ev.Path == dir {
			return injected
		}
		return do()
	})
	defer restore()
	acked := map[int]int64{}
	var failed error
	for i := range 100 {
		o := Offset{Group: "g", Topic: "t", Partition: i % 2, Next: int64(i)}
		if err := s.Commit(context.Background(), []Offset{o}); err != nil {
			failed = err
			break
		}
		acked[o.Partition] = o.Next
	}
	if failed == nil {
		t.Fatal("every commit succeeded although compaction could not make its rename durable")
	}
	if !errors.Is(failed, injected) {
		t.Errorf("commit error %v does not wrap the directory sync's", failed)
	}
	if err := s.Commit(context.Background(), []Offset{{Group: "g", Topic: "t", Partition: 0, Next: 1000}}); err == nil {
		t.Error("a commit after the failure succeeded")
	}
	s.Close()
	restore()
	s = openFileT(t, dir)
	defer s.Close()
	for p, want := range acked {
		if o := mustGet(t, s, "g", "t", p); o.Next < want {
			t.Errorf("partition %d: %d after reopen, acknowledged %d", p, o.Next, want)
		}
	}
}

// TestFileStoreReopenedTailIsDurable: a process killed between the write of a flush and its
// fsync leaves the records in the page cache, whole (a kill -9 loses no byte that reached it),
// and the next open reads them back as the state it serves. A commit of a lower offset is then
// acknowledged without a write, as already covered; unless the open made what it read durable,
// a power loss takes the offset back below that acknowledged commit.
func TestFileStoreReopenedTailIsDurable(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "offsets")
	rec := powerloss.New()
	defer rec.Install()()
	ctx := context.Background()
	s := openFileT(t, dir)
	mustCommit(t, s, Offset{Group: "g", Topic: "t", Partition: 0, Next: 50})
	s.Close()

	// The flush of offset 100 was written, and the process killed before its fsync.
	f, err := os.OpenFile(filepath.Join(dir, fileLogName), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	unsynced := Offset{Group: "g", Topic: "t", Partition: 0, Next: 100, CommittedAt: time.Now()}
	if _, err := f.Write(encodeRecord(nil, recordOf(unsynced, false))); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s = openFileT(t, dir)
	if err := s.Commit(ctx, []Offset{{Group: "g", Topic: "t", Partition: 0, Next: 90}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := rec.Drop(root); err != nil {
		t.Fatal(err)
	}
	s = openFileT(t, dir)
	defer s.Close()
	if o := mustGet(t, s, "g", "t", 0); o.Next < 90 {
		t.Fatalf("offset after the power loss: %d, below the acknowledged commit of 90", o.Next)
	}
}
