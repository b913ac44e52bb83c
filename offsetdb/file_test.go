package offsetdb

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func openFileT(t *testing.T, dir string) *FileStore {
	t.Helper()
	s, err := OpenFile(dir, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFileStoreTornTail cuts the last record in the middle, as a crash
// mid-write does: reopening keeps every complete record and drops the torn one.
func TestFileStoreTornTail(t *testing.T) {
	dir := t.TempDir()
	s := openFileT(t, dir)
	mustCommit(t, s, Offset{Group: "g", Topic: "t", Partition: 0, Next: 10})
	mustCommit(t, s, Offset{Group: "g", Topic: "t", Partition: 0, Next: 20})
	s.Close()
	p := filepath.Join(dir, fileLogName)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(data), "\n")
	if len(lines) != 3 || lines[2] != "" {
		t.Fatalf("log has %q", data)
	}
	torn := lines[0] + lines[1][:len(lines[1])/2]
	if err := os.WriteFile(p, []byte(torn), 0o640); err != nil {
		t.Fatal(err)
	}
	s = openFileT(t, dir)
	if o := mustGet(t, s, "g", "t", 0); o.Next != 10 {
		t.Fatalf("after torn tail: %d, want 10", o.Next)
	}
	mustCommit(t, s, Offset{Group: "g", Topic: "t", Partition: 0, Next: 30})
	s.Close()
	s = openFileT(t, dir)
	defer s.Close()
	if o := mustGet(t, s, "g", "t", 0); o.Next != 30 {
		t.Fatalf("after repair and commit: %d, want 30", o.Next)
	}
}

// TestFileStoreCorruptionIsAnError flips a byte of a record that valid
// records follow: that is damage, not a torn write, and Open refuses rather
// than silently dropping acknowledged offsets.
func TestFileStoreCorruptionIsAnError(t *testing.T) {
	dir := t.TempDir()
	s := openFileT(t, dir)
	mustCommit(t, s, Offset{Group: "g", Topic: "t", Partition: 0, Next: 10})
	mustCommit(t, s, Offset{Group: "g", Topic: "t", Partition: 1, Next: 20})
	s.Close()
	p := filepath.Join(dir, fileLogName)
	data, _ := os.ReadFile(p)
	data[20] ^= 0x01
	if err := os.WriteFile(p, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if s, err := OpenFile(dir, quietLogger()); err == nil {
		s.Close()
		t.Fatal("open of a corrupt log succeeded")
	} else {
		t.Logf("open: %v", err)
	}
}

func TestFileStoreCompaction(t *testing.T) {
	dir := t.TempDir()
	s := openFileT(t, dir)
	s.slack = 10
	for i := range 100 {
		mustCommit(t, s, Offset{Group: "g", Topic: "t", Partition: i % 3, Next: int64(i)})
	}
	if err := s.Reset(context.Background(), "g", "t", 0, 5); err != nil {
		t.Fatal(err)
	}
	s.Close()
	data, _ := os.ReadFile(filepath.Join(dir, fileLogName))
	if n := strings.Count(string(data), "\n"); n > 4*3+10+1 {
		t.Fatalf("log has %d records after compaction, want few", n)
	}
	s = openFileT(t, dir)
	defer s.Close()
	for p, want := range []int64{5, 97, 98} {
		if o := mustGet(t, s, "g", "t", p); o.Next != want {
			t.Errorf("partition %d: %d, want %d", p, o.Next, want)
		}
	}
}

func TestFileStoreLockedDirectory(t *testing.T) {
	dir := t.TempDir()
	s := openFileT(t, dir)
	defer s.Close()
	if s2, err := OpenFile(dir, quietLogger()); err == nil {
		s2.Close()
		t.Fatal("a second store opened the same directory")
	}
}

func FuzzDecodeFileRecord(f *testing.F) {
	f.Add([]byte(strings.TrimSuffix(string(encodeRecord(nil, fileRecord{Group: "g", Topic: "t", Next: 1})), "\n")))
	f.Add([]byte("00000000 {}"))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := decodeRecord(line)
		if err != nil {
			return
		}
		again, err := decodeRecord([]byte(strings.TrimSuffix(string(encodeRecord(nil, r)), "\n")))
		if err != nil || again != r {
			t.Fatalf("round trip of %+v: %+v, %v", r, again, err)
		}
	})
}
