package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func ents(first, term uint64, n int) []Entry {
	out := make([]Entry, n)
	for i := range out {
		out[i] = Entry{Index: first + uint64(i), Term: term, Data: []byte{byte(term), byte(first + uint64(i))}}
	}
	return out
}

func TestMemLogTruncatesConflictingSuffixAndCrashKeepsOnlySynced(t *testing.T) {
	m := NewMemLog()
	if err := m.Append(ents(1, 1, 5)); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	// A new leader of term 2 overwrites 3..5 with one entry at 3.
	if err := m.Append(ents(3, 2, 1)); err != nil {
		t.Fatal(err)
	}
	if got := m.LastIndex(); got != 3 {
		t.Fatalf("last index after conflicting append = %d, want 3", got)
	}
	if term, _ := m.Term(3); term != 2 {
		t.Fatalf("term of 3 = %d, want 2", term)
	}
	// Not synced: a crash brings back the synced suffix of term 1 and drops the new entry.
	m.Crash()
	if got := m.LastIndex(); got != 5 {
		t.Fatalf("last index after crash = %d, want 5 (the synced log)", got)
	}
	if term, _ := m.Term(3); term != 1 {
		t.Fatalf("term of 3 after crash = %d, want 1", term)
	}
	if err := m.Append(ents(6, 1, 2)); err != nil {
		t.Fatal(err)
	}
	m.Crash()
	if got := m.LastIndex(); got != 5 {
		t.Fatalf("unsynced entries 6-7 survived a crash: last index %d", got)
	}
	// Gaps are refused.
	if err := m.Append(ents(9, 1, 1)); err == nil {
		t.Fatal("append leaving a gap succeeded")
	}
}

func TestMemLogEntriesRespectsMaxSizeButReturnsOne(t *testing.T) {
	m := NewMemLog()
	if err := m.Append(ents(1, 1, 4)); err != nil {
		t.Fatal(err)
	}
	got, err := m.Entries(1, 5, 0)
	if err != nil || len(got) != 1 {
		t.Fatalf("Entries with maxSize 0 = %d entries, %v; want 1", len(got), err)
	}
	got, _ = m.Entries(1, 5, 4)
	if len(got) != 2 {
		t.Fatalf("Entries with maxSize 4 (2 bytes each) = %d entries, want 2", len(got))
	}
	if _, err := m.Entries(1, 6, 100); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Entries past the end: %v, want ErrUnavailable", err)
	}
}

func TestStorageMapsCompactionToRaftErrors(t *testing.T) {
	m := NewMemLog()
	if err := m.Append(ents(1, 1, 5)); err != nil {
		t.Fatal(err)
	}
	if err := m.Compact(3); err != nil {
		t.Fatal(err)
	}
	s, err := OpenStorage(t.TempDir(), m)
	if err == nil || !errors.Is(err, ErrNoState) {
		t.Fatalf("OpenStorage over entries without a state file: %v, want ErrNoState", err)
	}
	s = &Storage{log: m, hs: &pb.HardState{}, cs: &pb.ConfState{}}
	if _, err := s.Entries(3, 5, 100); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("Entries below the first index: %v, want raft.ErrCompacted", err)
	}
	if term, err := s.Term(3); err != nil || term != 1 {
		t.Fatalf("Term of the compaction point = %d, %v; want 1", term, err)
	}
	if _, err := s.Term(2); !errors.Is(err, raft.ErrCompacted) {
		t.Fatalf("Term below the compaction point: %v, want raft.ErrCompacted", err)
	}
	if _, err := s.Term(6); !errors.Is(err, raft.ErrUnavailable) {
		t.Fatalf("Term past the end: %v, want raft.ErrUnavailable", err)
	}
	if fi, _ := s.FirstIndex(); fi != 4 {
		t.Fatalf("FirstIndex = %d, want 4", fi)
	}
	if _, err := s.Snapshot(); !errors.Is(err, raft.ErrSnapshotTemporarilyUnavailable) {
		t.Fatalf("Snapshot of a compacted log: %v, want ErrSnapshotTemporarilyUnavailable", err)
	}
}

func TestStorageStateSurvivesReopenAndOnlyTermOrVoteRewrites(t *testing.T) {
	dir := t.TempDir()
	m := NewMemLog()
	s, err := OpenStorage(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap([]uint64{3, 1, 2}); err != nil {
		t.Fatal(err)
	}
	hs := &pb.HardState{Term: new(uint64(4)), Vote: new(uint64(2)), Commit: new(uint64(1))}
	if err := s.Save(hs, []*pb.Entry{{Index: new(uint64(1)), Term: new(uint64(4)), Data: []byte("a")}}); err != nil {
		t.Fatal(err)
	}
	// Commit-only change: the file is not rewritten (the commit index is a lower bound).
	before, _ := os.ReadFile(filepath.Join(dir, stateFileName))
	if err := s.Save(&pb.HardState{Term: new(uint64(4)), Vote: new(uint64(2)), Commit: new(uint64(2))}, nil); err != nil {
		t.Fatal(err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, stateFileName))
	if string(before) != string(after) {
		t.Fatal("a commit-only HardState change rewrote the state file")
	}
	m.Crash() // the entry was synced by Save
	s2, err := OpenStorage(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	hs2, cs2, _ := s2.InitialState()
	if hs2.GetTerm() != 4 || hs2.GetVote() != 2 || hs2.GetCommit() != 1 {
		t.Fatalf("reopened HardState %v", hs2)
	}
	if got := cs2.GetVoters(); len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Fatalf("reopened voters %v", got)
	}
	if m.LastIndex() != 1 {
		t.Fatalf("entry saved by Save lost in a crash: last index %d", m.LastIndex())
	}
	if err := s2.Bootstrap([]uint64{1, 2, 4}); err == nil {
		t.Fatal("Bootstrap with other voters than the stored ones succeeded")
	}
	if err := s2.Bootstrap([]uint64{2, 3, 1}); err != nil {
		t.Fatalf("Bootstrap with the stored voters: %v", err)
	}
}

func TestStorageRefusesCorruptStateFile(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStorage(dir, NewMemLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap([]uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, stateFileName)
	data, _ := os.ReadFile(path)
	for i := range data {
		bad := append([]byte(nil), data...)
		bad[i] ^= 0x10
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenStorage(dir, NewMemLog()); !errors.Is(err, ErrCorruptState) {
			t.Fatalf("byte %d flipped: OpenStorage = %v, want ErrCorruptState", i, err)
		}
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState(&pb.HardState{Term: new(uint64(3)), Vote: new(uint64(1)), Commit: new(uint64(9))},
		&pb.ConfState{Voters: []uint64{1, 2, 3}}, 7))
	f.Add([]byte("IMRS"))
	f.Fuzz(func(t *testing.T, b []byte) {
		hs, cs, ci, err := decodeState(b)
		if err != nil {
			return
		}
		again := encodeState(hs, cs, ci)
		if b[4] == 2 && string(again) != string(b) {
			t.Fatalf("decode/encode not a round trip")
		}
		hs2, cs2, ci2, err := decodeState(again)
		if err != nil || ci2 != ci || !proto.Equal(hs, hs2) || !proto.Equal(cs, cs2) {
			t.Fatalf("re-encoded state decodes differently: %v", err)
		}
	})
}

// A process killed inside the state file's atomic replace, after the rename and before the
// directory fsync, leaves a vote that the page cache serves and a power loss can take back.
// OpenStorage must make the name durable before raft acts on the vote: a node that refused a
// second candidate on the strength of it, then lost it, could vote twice in one term. The kill
// is staged through the sync hook (the directory fsync of the replace fails, as if the process
// had died there); the test then checks that opening the storage syncs the directory.
func TestOpenStorageMakesTheStateNameDurable(t *testing.T) {
	dir := t.TempDir()
	m := NewMemLog()
	s, err := OpenStorage(dir, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap([]uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	dirSyncs := 0
	killed := false
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if ev.Kind != fsutil.Dir || filepath.Clean(ev.Path) != filepath.Clean(dir) {
			return do()
		}
		mu.Lock()
		defer mu.Unlock()
		if !killed {
			killed = true
			return syscall.EIO // the process "died" before this directory fsync
		}
		dirSyncs++
		return do()
	})
	defer restore()
	if err := s.Save(&pb.HardState{Term: new(uint64(5)), Vote: new(uint64(3)), Commit: new(uint64(0))}, nil); err == nil {
		t.Fatal("Save succeeded although the directory fsync failed")
	}
	if _, err := OpenStorage(dir, m); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if dirSyncs == 0 {
		t.Fatal("OpenStorage read a state file whose name was never made durable and did not sync its directory")
	}
}
