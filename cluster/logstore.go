package cluster

import "errors"

// EntryKind says what a raft entry carries. Normal entries are the application's (today's
// batches); the others are membership changes, which this package does not apply yet.
type EntryKind uint8

const (
	KindNormal       EntryKind = 0
	KindConfChange   EntryKind = 1
	KindConfChangeV2 EntryKind = 2
)

// Entry is one raft entry as a LogStore keeps it. It is the package's own type, not raftpb's, so
// that the commit log can be adapted to LogStore without the storage engine importing raft.
type Entry struct {
	Index uint64
	Term  uint64
	Kind  EntryKind
	Data  []byte
}

// Errors a LogStore returns for indexes it cannot serve. The storage adapter maps them to
// raft's own sentinels.
var (
	// ErrCompacted: the index is at or below the compaction point.
	ErrCompacted = errors.New("cluster: log entries compacted")
	// ErrUnavailable: the index is above the last index.
	ErrUnavailable = errors.New("cluster: log entries unavailable")
)

// LogStore is what the raft storage adapter needs from a replicated log. The commit log will
// implement it (one entry = one batch, the batch header carrying term and index); MemLog is the
// in-memory implementation the tests use.
//
// Only the Ready loop writes (Append, Sync); raft reads (Entries, Term, FirstIndex, LastIndex)
// from the same goroutine, but status readers and tests may read concurrently, and a leader's
// loop goes on reading while a goroutine of its own runs Sync (never Append), so an
// implementation must be safe for concurrent use.
type LogStore interface {
	// Append writes ents, which are consecutive and start at an index in
	// [FirstIndex(), LastIndex()+1]. Every entry at or above ents[0].Index is discarded first
	// (a new leader overwrote a conflicting suffix). Appended entries are readable at once and
	// durable only after Sync returns.
	Append(ents []Entry) error

	// Entries returns the entries [lo, hi): at least one if lo < hi, then more while their data
	// totals at most maxSize bytes. ErrCompacted if lo is at or below the compaction point,
	// ErrUnavailable if hi is above LastIndex()+1.
	Entries(lo, hi, maxSize uint64) ([]Entry, error)

	// Term returns the term of entry i, for i in [FirstIndex()-1, LastIndex()]; the term of the
	// compaction point itself stays known.
	Term(i uint64) (uint64, error)

	// FirstIndex is the first index Entries can return (compaction point + 1).
	FirstIndex() uint64

	// LastIndex is the index of the last appended entry (compaction point if none).
	LastIndex() uint64

	// Sync makes every appended entry durable (and every truncation: a discarded suffix must
	// not come back after a crash). An error is fatal to the node: it stops.
	Sync() error

	// Compacted returns the index and term of the last entry removed by compaction, (0, 0) for
	// a log that was never compacted. It is raft's snapshot point.
	Compacted() (index, term uint64)
}
