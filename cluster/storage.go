package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"

	"github.com/imagomq/imago/internal/fsutil"
)

// stateFileName is the file in the node's data directory that holds the HardState (term, vote,
// commit) and the ConfState (the voters). It is small and replaced whole with
// fsutil.WriteFileAtomic, so a crash leaves the old or the new state, never a mix.
const stateFileName = "raft-state"

// Errors OpenStorage returns for a data directory a node must not start from.
var (
	// ErrNoState: the log holds entries but the state file is missing. The node may have voted
	// in a term it no longer remembers; it must not start (the operator replaces it under a
	// new node id).
	ErrNoState = errors.New("cluster: log has entries but no raft state file")
	// ErrCorruptState: the state file fails its checksum or cannot be decoded.
	ErrCorruptState = errors.New("cluster: raft state file corrupt")
)

// Storage is raft.Storage over a LogStore plus the state file. The Ready loop writes through
// Save; raft reads through the raft.Storage methods.
type Storage struct {
	dir   string
	state stateFile
	log   LogStore
	hs    *pb.HardState
	cs    *pb.ConfState
	// confIndex is the index of the last membership change cs includes (0: the bootstrap voters).
	confIndex uint64
	// exists reports whether a state file has been written.
	exists bool
	// snapshots makes the snapshot of a compacted log (Config.Snapshots; set by NewNode).
	snapshots Snapshotter
	// fault is the first error of the log (a read error, a checksum that fails) that Entries or
	// Term handed to raft: raft panics on any error but its own two, and the Ready loop turns
	// that panic into a clean stop with this error (Node.run).
	fault atomic.Pointer[error]
}

var _ raft.Storage = (*Storage)(nil)

// OpenStorage opens the raft state in dir over log. A directory without a state file is new:
// Bootstrap must be called before the first start.
func OpenStorage(dir string, log LogStore) (*Storage, error) {
	if err := fsutil.RemoveTemps(dir, stateFileName); err != nil {
		return nil, fmt.Errorf("open raft state in %s: %w", dir, err)
	}
	return openStorage(dir, diskState{dir}, log)
}

// stateFile reads and replaces the state file; diskState is the real one, the simulation
// keeps it in memory.
type stateFile interface {
	read() ([]byte, error) // os.ErrNotExist when never written
	write(data []byte) error
}

type diskState struct{ dir string }

// read returns the state file with its name made durable (fsutil.ReadFileDurable): a vote left
// by a process killed inside WriteFileAtomic, served by the page cache, could be taken back by
// a power loss after raft acted on it, and the node vote twice in one term.
func (d diskState) read() ([]byte, error) {
	return fsutil.ReadFileDurable(filepath.Join(d.dir, stateFileName))
}

func (d diskState) write(data []byte) error {
	return fsutil.WriteFileAtomic(d.dir, stateFileName, data, 0o644)
}

func openStorage(dir string, state stateFile, log LogStore) (*Storage, error) {
	s := &Storage{dir: dir, state: state, log: log, hs: &pb.HardState{}, cs: &pb.ConfState{}}
	data, err := state.read()
	switch {
	case errors.Is(err, os.ErrNotExist):
		if last := log.LastIndex(); last > 0 {
			return nil, fmt.Errorf("open raft state in %s (log ends at %d): %w", dir, last, ErrNoState)
		}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("open raft state in %s: %w", dir, err)
	}
	hs, cs, confIndex, err := decodeState(data)
	if err != nil {
		return nil, fmt.Errorf("open raft state in %s: %w", dir, err)
	}
	s.confIndex = confIndex
	if last := log.LastIndex(); hs.GetCommit() > last {
		return nil, fmt.Errorf("open raft state in %s: commit %d beyond the log's last index %d: %w",
			dir, hs.GetCommit(), last, ErrCorruptState)
	}
	s.hs, s.cs, s.exists = hs, cs, true
	return s, nil
}

// Bootstrap records the voters of a new group. On a directory that already has a state file it
// only checks that the voters are the same ones (a node restarted with another peer list is a
// configuration error, not something to paper over).
func (s *Storage) Bootstrap(voters []uint64) error {
	v := slices.Clone(voters)
	slices.Sort(v)
	if s.exists && s.confIndex > 0 {
		return nil // the membership changed since bootstrap: the log, not the configuration, says who votes
	}
	if s.exists {
		have := slices.Clone(s.cs.GetVoters())
		slices.Sort(have)
		if !slices.Equal(have, v) {
			return fmt.Errorf("bootstrap: state in %s has voters %v, configured %v", s.dir, have, v)
		}
		return nil
	}
	return s.writeState(s.hs, &pb.ConfState{Voters: v})
}

// IsNew reports whether the directory had no raft state when it was opened.
func (s *Storage) IsNew() bool { return !s.exists }

// ConfIndex is the index of the last membership change the stored ConfState includes.
func (s *Storage) ConfIndex() uint64 { return s.confIndex }

// ConfState returns the stored membership.
func (s *Storage) ConfState() *pb.ConfState { return s.cs }

// setConfState records the membership after the change at index was applied.
func (s *Storage) setConfState(cs *pb.ConfState, index uint64) error {
	prev := s.confIndex
	s.confIndex = index
	if err := s.writeState(s.hs, cs); err != nil {
		s.confIndex = prev
		return err
	}
	return nil
}

// HardState returns the last HardState written.
func (s *Storage) HardState() *pb.HardState { return s.hs }

// raiseCommit records that index is committed (it was applied before a restart), so raft does
// not start with a commit index below what the state machine already holds.
func (s *Storage) raiseCommit(index uint64) error {
	if index <= s.hs.GetCommit() {
		return nil
	}
	if last := s.log.LastIndex(); index > last {
		return fmt.Errorf("applied index %d beyond the log's last index %d", index, last)
	}
	hs := &pb.HardState{Term: new(s.hs.GetTerm()), Vote: new(s.hs.GetVote()), Commit: new(index)}
	return s.writeState(hs, s.cs)
}

// Save persists one Ready's entries and HardState in the order raft requires: entries appended
// and synced first, then the state file if the term or the vote changed. When Save returns
// nil, everything a message of this Ready may vouch for is durable.
func (s *Storage) Save(hs *pb.HardState, ents []*pb.Entry) error {
	if err := s.appendEntries(ents); err != nil {
		return err
	}
	if err := s.syncEntries(ents); err != nil {
		return err
	}
	return s.saveState(hs)
}

// appendEntries writes ents to the log: readable at once, durable after syncEntries. Save is
// appendEntries, syncEntries and saveState in that order; a leader's loop runs the sync on a
// goroutine of its own meanwhile (overlap.go, saveOverlapped).
func (s *Storage) appendEntries(ents []*pb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	out := make([]Entry, len(ents))
	for i, e := range ents {
		out[i] = Entry{Index: e.GetIndex(), Term: e.GetTerm(), Kind: EntryKind(e.GetType()), Data: e.GetData()}
	}
	if err := s.log.Append(out); err != nil {
		return fmt.Errorf("append entries %d-%d: %w", out[0].Index, out[len(out)-1].Index, err)
	}
	return nil
}

// syncEntries makes the appended ents durable; it may run on another goroutine than the
// loop's (the log is safe for concurrent use).
func (s *Storage) syncEntries(ents []*pb.Entry) error {
	if len(ents) == 0 {
		return nil
	}
	if err := s.log.Sync(); err != nil {
		return fmt.Errorf("sync entries %d-%d: %w", ents[0].GetIndex(), ents[len(ents)-1].GetIndex(), err)
	}
	return nil
}

// saveState writes the state file when hs changes the term or the vote (a commit index alone
// is not worth an fsync: raft learns it again from the leader).
func (s *Storage) saveState(hs *pb.HardState) error {
	if hs == nil || (hs.GetTerm() == s.hs.GetTerm() && hs.GetVote() == s.hs.GetVote()) {
		return nil
	}
	return s.writeState(hs, s.cs)
}

func (s *Storage) writeState(hs *pb.HardState, cs *pb.ConfState) error {
	if err := s.state.write(encodeState(hs, cs, s.confIndex)); err != nil {
		return fmt.Errorf("save raft state (term %d, vote %d): %w", hs.GetTerm(), hs.GetVote(), err)
	}
	s.hs = &pb.HardState{Term: new(hs.GetTerm()), Vote: new(hs.GetVote()), Commit: new(hs.GetCommit())}
	s.cs, s.exists = cs, true
	return nil
}

// InitialState implements raft.Storage.
func (s *Storage) InitialState() (*pb.HardState, *pb.ConfState, error) {
	return s.hs, s.cs, nil
}

// Entries implements raft.Storage.
func (s *Storage) Entries(lo, hi, maxSize uint64) ([]*pb.Entry, error) {
	ents, err := s.log.Entries(lo, hi, maxSize)
	if err != nil {
		return nil, s.raftErr(err)
	}
	out := make([]*pb.Entry, len(ents))
	for i, e := range ents {
		out[i] = &pb.Entry{Index: new(e.Index), Term: new(e.Term), Type: pb.EntryType(e.Kind).Enum(), Data: e.Data}
	}
	return out, nil
}

// Term implements raft.Storage.
func (s *Storage) Term(i uint64) (uint64, error) {
	t, err := s.log.Term(i)
	if err != nil {
		return 0, s.raftErr(err)
	}
	return t, nil
}

// LastIndex implements raft.Storage.
func (s *Storage) LastIndex() (uint64, error) { return s.log.LastIndex(), nil }

// FirstIndex implements raft.Storage.
func (s *Storage) FirstIndex() (uint64, error) { return s.log.FirstIndex(), nil }

// Snapshot implements raft.Storage. An uncompacted log answers its empty snapshot with the
// current voters. A compacted one answers the state machine's snapshot (Snapshotter.Make): raft
// asks for it when a follower needs entries below the compaction point. While none can be made
// (no Snapshotter, none at or above the compaction point yet, or a membership change applied
// after the state it describes) it answers ErrSnapshotTemporarilyUnavailable and raft retries.
func (s *Storage) Snapshot() (*pb.Snapshot, error) {
	index, term := s.log.Compacted()
	if index == 0 {
		return &pb.Snapshot{Metadata: &pb.SnapshotMetadata{ConfState: s.cs, Index: new(index), Term: new(term)}}, nil
	}
	if s.snapshots == nil {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	data, sIndex, sTerm, err := s.snapshots.Make()
	if err != nil || sIndex < index || s.confIndex > sIndex {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	return &pb.Snapshot{Data: data, Metadata: &pb.SnapshotMetadata{ConfState: s.cs, Index: new(sIndex), Term: new(sTerm)}}, nil
}

// raftErr maps the log's errors to raft's. Raft's Storage contract knows two: ErrCompacted and
// ErrUnavailable; raft panics on any other (and on ErrUnavailable where it expects the entries),
// so any other is recorded as the storage's fault first.
func (s *Storage) raftErr(err error) error {
	switch {
	case errors.Is(err, ErrCompacted):
		return raft.ErrCompacted
	case errors.Is(err, ErrUnavailable):
		return raft.ErrUnavailable
	}
	s.fault.CompareAndSwap(nil, &err)
	return err
}

// Fault returns the first error of the log Entries or Term handed to raft (other than
// compacted or unavailable entries), or nil.
func (s *Storage) Fault() error {
	if p := s.fault.Load(); p != nil {
		return *p
	}
	return nil
}

// stopOnStorageFault ends the loop cleanly when raft panicked on an error of its storage (a
// damaged log on this node's disk: a read error or a bad checksum): raft's Storage contract
// allows only its own two errors and panics on any other, which would end the process abruptly
// with a Go panic for a log line and every client's connection reset. The node stops with the
// storage's error instead, as on any other error: waiting proposals end with ErrOutcomeUnknown,
// Status().Err names the file and position. A panic without a storage fault is raft's own
// broken invariant: it is not recovered, and goes on with its stack.
func (n *Node) stopOnStorageFault() {
	err := n.cfg.Storage.Fault()
	if err == nil {
		return
	}
	if recover() == nil {
		return
	}
	err = fmt.Errorf("read the raft log: %w", err)
	n.log.Error("raft node stopped", "err", err)
	n.failPending(fmt.Errorf("%w: %w", ErrOutcomeUnknown, err))
	n.publish(err)
}

// The state file: "IMRS", version 2, term, vote, commit, the index of the last membership
// change applied (uint64 each; version 1 has no such index), the number of voters (uint32) and
// the voters (uint64 each), the number of learners and the learners, then a CRC-32C of
// everything before it. All integers big-endian.
const stateMagic = "IMRS"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func encodeState(hs *pb.HardState, cs *pb.ConfState, confIndex uint64) []byte {
	b := []byte(stateMagic)
	b = append(b, 2)
	b = binary.BigEndian.AppendUint64(b, hs.GetTerm())
	b = binary.BigEndian.AppendUint64(b, hs.GetVote())
	b = binary.BigEndian.AppendUint64(b, hs.GetCommit())
	b = binary.BigEndian.AppendUint64(b, confIndex)
	for _, ids := range [][]uint64{cs.GetVoters(), cs.GetLearners()} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(ids)))
		for _, id := range ids {
			b = binary.BigEndian.AppendUint64(b, id)
		}
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func decodeState(b []byte) (*pb.HardState, *pb.ConfState, uint64, error) {
	if len(b) < len(stateMagic)+1+24+4+4+4 || string(b[:4]) != stateMagic {
		return nil, nil, 0, fmt.Errorf("%w: bad header or length %d", ErrCorruptState, len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, nil, 0, fmt.Errorf("%w: checksum mismatch", ErrCorruptState)
	}
	version := body[4]
	if version != 1 && version != 2 {
		return nil, nil, 0, fmt.Errorf("%w: unknown version %d", ErrCorruptState, body[4])
	}
	p := body[5:]
	hs := &pb.HardState{
		Term:   new(binary.BigEndian.Uint64(p)),
		Vote:   new(binary.BigEndian.Uint64(p[8:])),
		Commit: new(binary.BigEndian.Uint64(p[16:])),
	}
	p = p[24:]
	var confIndex uint64
	if version == 2 {
		if len(p) < 8 {
			return nil, nil, 0, fmt.Errorf("%w: truncated", ErrCorruptState)
		}
		confIndex = binary.BigEndian.Uint64(p)
		p = p[8:]
	}
	var lists [2][]uint64
	for i := range lists {
		if len(p) < 4 {
			return nil, nil, 0, fmt.Errorf("%w: truncated member list", ErrCorruptState)
		}
		n := binary.BigEndian.Uint32(p)
		p = p[4:]
		if uint64(len(p)) < uint64(n)*8 {
			return nil, nil, 0, fmt.Errorf("%w: truncated member list of %d", ErrCorruptState, n)
		}
		for j := uint32(0); j < n; j++ {
			lists[i] = append(lists[i], binary.BigEndian.Uint64(p))
			p = p[8:]
		}
	}
	if len(p) != 0 {
		return nil, nil, 0, fmt.Errorf("%w: %d trailing bytes", ErrCorruptState, len(p))
	}
	return hs, &pb.ConfState{Voters: lists[0], Learners: lists[1]}, confIndex, nil
}

// InstallSnapshotState writes the raft state of a directory whose state machine was just
// replaced by a snapshot at index (of term), before the node starts: the commit index is the
// snapshot's, the membership the snapshot's (cs, including the change at confIndex). The term
// and vote the node held are kept (a snapshot never lowers them); a directory without a state
// file (a new member whose first message was the snapshot) starts at the snapshot's term.
func InstallSnapshotState(dir string, index, term, confIndex uint64, cs *pb.ConfState) error {
	hs := &pb.HardState{Term: new(term), Vote: new(uint64(0)), Commit: new(index)}
	data, err := diskState{dir}.read()
	switch {
	case err == nil:
		old, _, _, err := decodeState(data)
		if err != nil {
			return fmt.Errorf("install snapshot state in %s: %w", dir, err)
		}
		if old.GetTerm() >= term {
			hs.Term, hs.Vote = new(old.GetTerm()), new(old.GetVote())
		}
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("install snapshot state in %s: %w", dir, err)
	}
	if err := (diskState{dir}).write(encodeState(hs, cs, confIndex)); err != nil {
		return fmt.Errorf("install snapshot state in %s: %w", dir, err)
	}
	return nil
}
