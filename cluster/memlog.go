package cluster

import (
	"fmt"
	"sync"
)

// MemLog is an in-memory LogStore that models durability: Append makes entries readable, Sync
// makes them durable, and Crash returns the log to what was durable, as a power loss would. It
// is the store of the deterministic cluster test, and a reference for what the commit log's
// implementation must do.
//
// A truncation is durable only after Sync too: Crash brings back a discarded suffix that was
// synced before, exactly as a disk that lost the unsynced rewrite would.
type MemLog struct {
	mu sync.Mutex
	// ents[0] is the compaction point (its Index and Term only); ents[1:] the live entries.
	ents []Entry
	// durable is the log as of the last Sync, in the same shape.
	durable []Entry
	// FailSync, when set, is called at the start of every Sync; an error it returns is Sync's
	// error and nothing is made durable. Tests use it to crash a node between its write and
	// its fsync.
	FailSync func() error
}

// NewMemLog returns an empty log whose compaction point is (0, 0).
func NewMemLog() *MemLog {
	return &MemLog{ents: []Entry{{}}, durable: []Entry{{}}}
}

func (m *MemLog) offset() uint64 { return m.ents[0].Index }

// Append implements LogStore.
func (m *MemLog) Append(ents []Entry) error {
	if len(ents) == 0 {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	first := ents[0].Index
	last := m.offset() + uint64(len(m.ents)) - 1
	if first <= m.offset() || first > last+1 {
		return fmt.Errorf("memlog: append at %d outside [%d, %d]", first, m.offset()+1, last+1)
	}
	for i := 1; i < len(ents); i++ {
		if ents[i].Index != first+uint64(i) {
			return fmt.Errorf("memlog: append: entry %d follows %d", ents[i].Index, ents[i-1].Index)
		}
	}
	keep := first - m.offset()
	// Copy: the caller (raft) may reuse nothing it hands us, but we must not alias the durable copy.
	m.ents = append(m.ents[:keep:keep], cloneEntries(ents)...)
	return nil
}

// Entries implements LogStore.
func (m *MemLog) Entries(lo, hi, maxSize uint64) ([]Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if lo <= m.offset() {
		return nil, fmt.Errorf("memlog: entries from %d: %w", lo, ErrCompacted)
	}
	last := m.offset() + uint64(len(m.ents)) - 1
	if hi > last+1 || lo > hi {
		return nil, fmt.Errorf("memlog: entries [%d, %d) past last %d: %w", lo, hi, last, ErrUnavailable)
	}
	var out []Entry
	var size uint64
	for i := lo; i < hi; i++ {
		e := m.ents[i-m.offset()]
		size += uint64(len(e.Data))
		if len(out) > 0 && size > maxSize {
			break
		}
		out = append(out, e)
	}
	return out, nil
}

// Term implements LogStore.
func (m *MemLog) Term(i uint64) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i < m.offset() {
		return 0, fmt.Errorf("memlog: term of %d: %w", i, ErrCompacted)
	}
	if i-m.offset() >= uint64(len(m.ents)) {
		return 0, fmt.Errorf("memlog: term of %d: %w", i, ErrUnavailable)
	}
	return m.ents[i-m.offset()].Term, nil
}

// FirstIndex implements LogStore.
func (m *MemLog) FirstIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.offset() + 1
}

// LastIndex implements LogStore.
func (m *MemLog) LastIndex() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.offset() + uint64(len(m.ents)) - 1
}

// Sync implements LogStore.
func (m *MemLog) Sync() error {
	// The hook runs unlocked: a test may hold a sync in it while the loop reads the log.
	if m.FailSync != nil {
		if err := m.FailSync(); err != nil {
			return fmt.Errorf("memlog: sync: %w", err)
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.durable = append([]Entry(nil), m.ents...)
	return nil
}

// Compacted implements LogStore.
func (m *MemLog) Compacted() (uint64, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ents[0].Index, m.ents[0].Term
}

// Compact drops every entry up to and including i, which becomes the compaction point. Like a
// retention deletion it is durable at once.
func (m *MemLog) Compact(i uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	last := m.offset() + uint64(len(m.ents)) - 1
	if i <= m.offset() || i > last {
		return fmt.Errorf("memlog: compact to %d outside [%d, %d]", i, m.offset()+1, last)
	}
	m.ents = append([]Entry{{Index: i, Term: m.ents[i-m.offset()].Term}}, m.ents[i-m.offset()+1:]...)
	if m.durable[0].Index < i {
		d := m.durable
		if i-d[0].Index < uint64(len(d)) {
			m.durable = append([]Entry{{Index: i, Term: d[i-d[0].Index].Term}}, d[i-d[0].Index+1:]...)
		} else {
			m.durable = []Entry{m.ents[0]}
		}
	}
	return nil
}

// Crash discards everything not made durable by Sync: entries appended since, and truncations
// since (a synced suffix that was discarded comes back).
func (m *MemLog) Crash() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ents = append([]Entry(nil), m.durable...)
}

// Durable returns a copy of the durable entries (above the compaction point).
func (m *MemLog) Durable() []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return cloneEntries(m.durable[1:])
}

func cloneEntries(ents []Entry) []Entry {
	out := make([]Entry, len(ents))
	for i, e := range ents {
		out[i] = e
		out[i].Data = append([]byte(nil), e.Data...)
	}
	return out
}
