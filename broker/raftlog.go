package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// In cluster mode (Options.Replicated) the commit log is the raft log: one raft entry is one
// batch, written with magic 2 (record.go) so that its header carries the entry's term and
// index. There is no second copy of a message. RaftLog is that log seen as raft's storage; the
// replica package adapts it to cluster.LogStore.
//
// The raft index (which log position and term each entry has) is derived: it lives in memory
// and is rebuilt at open by reading every batch header of the log (recoverReplicated), as the
// partition indexes are rebuilt from the log when they are lost. It costs 24 bytes an entry.
//
// An entry's data, as raft and the peers see it, is the batch with term and index zero (the
// leader encodes it before raft gives it an index); Append writes it with the two fields set
// and the header CRC recomputed, and Entries hands it back with them zeroed again. Entries
// that are not the broker's batches (the empty entry a new leader commits, membership changes)
// are stored as batches of type 7 (batchRaft) whose body is the entry's data.

// Kinds of RaftEntry; the values are the cluster package's (and raft's) entry types.
const (
	RaftEntryNormal       uint8 = 0
	RaftEntryConfChange   uint8 = 1
	RaftEntryConfChangeV2 uint8 = 2
)

// Errors RaftLog returns for indexes it cannot serve.
var (
	ErrRaftCompacted   = errors.New("raft log entries compacted")
	ErrRaftUnavailable = errors.New("raft log entries unavailable")
)

// RaftEntry is one raft entry as the broker stores it.
type RaftEntry struct {
	Index uint64
	Term  uint64
	Kind  uint8
	Data  []byte
}

// raftLoc is where entry i is: its batch's log position and length, and its term.
type raftLoc struct {
	pos  int64
	size uint32
	term uint64
}

// RaftLog is the commit log as raft's log. Only the replica's Ready loop calls Append and
// Sync; the read methods may be called from anywhere.
type RaftLog struct {
	b *Broker

	mu sync.RWMutex
	// compIndex and compTerm are the last entry compaction removed (raftcompact.go): (0, 0)
	// for a log never compacted. locs[i] is entry compIndex+1+i.
	compIndex, compTerm uint64
	locs                []raftLoc
	// readMu is held (shared) by Entries while it reads batches from the log, and exclusively
	// by compaction while it deletes segments, so that a read never meets a segment deleted
	// under it.
	readMu sync.RWMutex
	// cache holds the data of the newest entries (a contiguous run ending at the last index:
	// every entry not yet applied, and applied ones while the cache holds at most
	// raftCacheMaxBytes and they were applied fewer than raftCacheKeep entries ago):
	// raft reads each entry back to apply it and to send it, and would otherwise read it from
	// the disk it was just written to. The data is raft's own (immutable) entry data.
	cache      []RaftEntry
	cacheBytes int

	buf []byte // Append's encoding buffer (Ready loop only)
	// What was appended since the last Sync, for the Observer (Ready loop only).
	pending FlushStats
}

const (
	raftCacheMaxBytes = 64 << 20
	raftCacheKeep     = 4096
)

// RaftLog returns the broker's raft log; nil unless the broker was opened with Replicated.
func (b *Broker) RaftLog() *RaftLog { return b.rlog }

// FirstIndex is the first index Entries can return: the one after the last entry compaction
// removed (raftcompact.go).
func (l *RaftLog) FirstIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.compIndex + 1
}

// LastIndex is the index of the last entry in the log (the compaction point when it holds none).
func (l *RaftLog) LastIndex() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.compIndex + uint64(len(l.locs))
}

// Compacted is raft's snapshot point: the index and term of the last entry compaction removed,
// (0, 0) when none was.
func (l *RaftLog) Compacted() (index, term uint64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.compIndex, l.compTerm
}

// Term returns the term of entry i, for i from the compaction point (whose term stays known)
// to the last index; 0 for index 0.
func (l *RaftLog) Term(i uint64) (uint64, error) {
	if i == 0 {
		return 0, nil
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	switch {
	case i < l.compIndex:
		return 0, ErrRaftCompacted
	case i == l.compIndex:
		return l.compTerm, nil
	case i > l.compIndex+uint64(len(l.locs)):
		return 0, ErrRaftUnavailable
	}
	return l.locs[i-l.compIndex-1].term, nil
}

// loc returns where entry i is.
func (l *RaftLog) loc(i uint64) (raftLoc, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i <= l.compIndex || i > l.compIndex+uint64(len(l.locs)) {
		return raftLoc{}, false
	}
	return l.locs[i-l.compIndex-1], true
}

// Entries returns entries [lo, hi): at least one when lo < hi, then more while their data
// totals at most maxSize bytes. Each batch is verified (header and record CRCs) as it is read:
// a leader never sends a damaged entry to a follower.
func (l *RaftLog) Entries(lo, hi, maxSize uint64) ([]RaftEntry, error) {
	l.readMu.RLock()
	defer l.readMu.RUnlock()
	l.mu.RLock()
	if lo <= l.compIndex {
		l.mu.RUnlock()
		return nil, ErrRaftCompacted
	}
	if hi > l.compIndex+uint64(len(l.locs))+1 {
		l.mu.RUnlock()
		return nil, ErrRaftUnavailable
	}
	if n := len(l.cache); n > 0 && lo >= l.cache[0].Index && lo < hi {
		var (
			out  []RaftEntry
			size uint64
		)
		for _, e := range l.cache[lo-l.cache[0].Index : hi-l.cache[0].Index] {
			if len(out) > 0 && size+uint64(len(e.Data)) > maxSize {
				break
			}
			size += uint64(len(e.Data))
			out = append(out, e)
		}
		l.mu.RUnlock()
		return out, nil
	}
	locs := append([]raftLoc(nil), l.locs[lo-l.compIndex-1:hi-l.compIndex-1]...)
	l.mu.RUnlock()
	var (
		out  []RaftEntry
		size uint64
		recs []record
	)
	for i, loc := range locs {
		raw := make([]byte, loc.size)
		if err := l.b.log.readAt(raw, loc.pos); err != nil {
			return nil, l.readFailed(lo+uint64(i), loc.pos, err)
		}
		bv, err := decodeBatch(raw, recs)
		if err != nil {
			return nil, l.readFailed(lo+uint64(i), loc.pos, fmt.Errorf("%w: %v", ErrCorrupt, err))
		}
		recs = bv.Records
		h := bv.Header
		if h.Magic != raftMagic || h.RaftIndex != lo+uint64(i) || h.RaftTerm != loc.term {
			return nil, l.readFailed(lo+uint64(i), loc.pos, fmt.Errorf("%w: the batch there is raft entry %d term %d, expected term %d",
				ErrCorrupt, h.RaftIndex, h.RaftTerm, loc.term))
		}
		e := RaftEntry{Index: h.RaftIndex, Term: h.RaftTerm}
		if h.Type == batchRaft {
			e.Kind = uint8(h.Flags >> 1 & 3)
			e.Data = raw[raftHeaderSize:]
		} else {
			stripRaftHeader(raw)
			e.Data = raw
		}
		if len(out) > 0 && size+uint64(len(e.Data)) > maxSize {
			break
		}
		size += uint64(len(e.Data))
		out = append(out, e)
	}
	return out, nil
}

// readFailed is Entries' error for entry index at log position pos, which could not be read or
// failed verification: the log on this node's disk is damaged (or its disk fails), so the
// broker fails (Err, Failed) and the raft node stops. The error names the segment file and the
// byte in it, and what the operator does.
func (l *RaftLog) readFailed(index uint64, pos int64, err error) error {
	file, off := l.b.log.locate(pos)
	err = fmt.Errorf("%w: raft entry %d at log position %d (%s, byte %d) cannot be read: %w; this node's commit log is damaged: "+
		"keep its data directory for inspection, check the disk, and replace the node under a new node id "+
		"(docs/runbooks.md, \"A corrupt commit log\"; docs/cluster.md, \"Runbook: replace a node\")", ErrStorage, index, pos, file, off, err)
	l.b.stateMu.Lock()
	first := l.b.failed == nil
	l.b.setFailedLocked(fmt.Errorf("%w: %w", ErrClosed, err))
	l.b.stateMu.Unlock()
	if first {
		l.b.opts.Logger.Error("reading the raft log failed; refusing writes until restart", "err", err)
	}
	return err
}

// stripRaftHeader zeroes the term and index of a magic-2 batch and recomputes its header CRC:
// the batch as its leader proposed it.
func stripRaftHeader(b []byte) {
	clear(b[48:raftHeaderSize])
	binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b[8:raftHeaderSize], castagnoli))
}

// appendRaftEntry encodes e as its batch at the end of buf.
func appendRaftEntry(buf []byte, e RaftEntry) ([]byte, error) {
	if e.Kind == RaftEntryNormal && len(e.Data) > 0 {
		h, err := parseBatchHeader(e.Data)
		if err != nil {
			return buf, fmt.Errorf("raft entry %d is not a batch: %w", e.Index, err)
		}
		if h.Magic != raftMagic || int(h.Length) != len(e.Data) {
			return buf, fmt.Errorf("raft entry %d is not a replicated batch (magic %d, length %d of %d bytes)", e.Index, h.Magic, h.Length, len(e.Data))
		}
		at := len(buf)
		buf = append(buf, e.Data...)
		b := buf[at:]
		binary.BigEndian.PutUint64(b[48:], e.Term)
		binary.BigEndian.PutUint64(b[56:], e.Index)
		binary.BigEndian.PutUint32(b[4:], crc32.Checksum(b[8:raftHeaderSize], castagnoli))
		return buf, nil
	}
	if e.Kind > RaftEntryConfChangeV2 {
		return buf, fmt.Errorf("raft entry %d has unknown kind %d", e.Index, e.Kind)
	}
	at := len(buf)
	buf = grow(buf, raftHeaderSize)
	buf = append(buf, e.Data...)
	putBatchHeader(buf[at:], batchHeader{Magic: raftMagic, Length: uint32(len(buf) - at), Type: batchRaft,
		Flags: uint16(e.Kind) << 1, RaftTerm: e.Term, RaftIndex: e.Index})
	return buf, nil
}

// Append writes ents, which are consecutive and start at an index in [FirstIndex(),
// LastIndex()+1]; a
// suffix from ents[0].Index on is discarded first (a new leader overwrote entries that were
// never committed). The entries are readable at once and durable after Sync. A write error
// stops the broker as a failed flush does (fail): the restart cuts the log at its durable end.
func (l *RaftLog) Append(ents []RaftEntry) error {
	if len(ents) == 0 {
		return nil
	}
	b := l.b
	first := ents[0].Index
	last := l.LastIndex()
	if first < l.FirstIndex() || first > last+1 {
		return fmt.Errorf("append raft entries at %d: the log ends at %d", first, last)
	}
	if first <= last {
		if err := l.truncate(first); err != nil {
			b.fail(err, nil)
			return err
		}
	}
	buf := l.buf[:0]
	locs := make([]raftLoc, 0, len(ents))
	var err error
	for i, e := range ents {
		if e.Index != first+uint64(i) {
			return fmt.Errorf("append raft entries: entry %d follows %d", e.Index, ents[i-1].Index)
		}
		n := raftHeaderSize + len(e.Data)
		if b.log.needsRoll(len(buf) + n) {
			if err = l.write(buf); err == nil {
				buf = buf[:0]
				if err = b.log.sync(); err == nil {
					err = b.log.createSegment(b.log.end.Load())
				}
			}
			if err != nil {
				break
			}
		}
		at := len(buf)
		if buf, err = appendRaftEntry(buf, e); err != nil {
			return err // not a write failure: the entry itself is wrong
		}
		locs = append(locs, raftLoc{pos: b.log.end.Load() + int64(at), size: uint32(len(buf) - at), term: e.Term})
	}
	if err == nil {
		t := time.Now()
		err = l.write(buf)
		l.pending.Write += time.Since(t)
	}
	l.pending.Requests += len(ents)
	l.buf = buf[:0]
	if err != nil {
		b.fail(err, nil)
		return fmt.Errorf("append raft entries %d-%d: %w", first, ents[len(ents)-1].Index, err)
	}
	l.mu.Lock()
	l.locs = append(l.locs, locs...)
	for _, e := range ents {
		l.cache = append(l.cache, e)
		l.cacheBytes += len(e.Data)
	}
	l.trimCacheLocked()
	l.mu.Unlock()
	return nil
}

// trimCacheLocked drops the oldest cached entries beyond the cache's bounds. The caller holds
// l.mu.
func (l *RaftLog) trimCacheLocked() {
	l.b.stateMu.Lock()
	applied := l.b.raftApplied
	l.b.stateMu.Unlock()
	drop := 0
	for drop < len(l.cache) {
		e := l.cache[drop]
		// Never an entry not yet applied: the leader finds its own requests by their entry's
		// data when it applies them (replicate.go), and raft would read them back anyway.
		if e.Index > applied || (l.cacheBytes <= raftCacheMaxBytes && e.Index+raftCacheKeep > applied) {
			break
		}
		l.cacheBytes -= len(e.Data)
		drop++
	}
	if drop > 0 {
		clear(l.cache[:drop])
		l.cache = l.cache[drop:]
	}
}

func (l *RaftLog) write(buf []byte) error {
	if len(buf) == 0 {
		return nil
	}
	if err := l.b.log.write(buf); err != nil {
		return err
	}
	l.pending.Bytes += len(buf)
	l.b.stats.bytesIn.Add(int64(len(buf)))
	return nil
}

// Sync makes every appended entry, and every truncation, durable. An error is final.
func (l *RaftLog) Sync() error {
	t := time.Now()
	if err := l.b.log.sync(); err != nil {
		l.b.fail(err, nil)
		return err
	}
	if l.pending.Requests > 0 && l.b.opts.Observer != nil {
		l.pending.Sync = time.Since(t)
		l.b.opts.Observer.Flushed(l.pending)
	}
	l.pending = FlushStats{}
	return nil
}

// truncate discards entries from index first on. Raft only ever discards entries that were
// never committed; one at or below what this node applied would mean the group broke its own
// rules, and the node stops rather than undo state.
func (l *RaftLog) truncate(first uint64) error {
	loc, ok := l.loc(first)
	if !ok {
		return fmt.Errorf("truncate raft log at %d: no such entry", first)
	}
	b := l.b
	b.stateMu.Lock()
	applied := b.raftApplied
	b.stateMu.Unlock()
	if first <= applied {
		return fmt.Errorf("truncate raft log at %d: entries up to %d are applied", first, applied)
	}
	b.opts.Logger.Info("discarding uncommitted raft entries a new leader overwrote", "from_index", first, "to_index", l.LastIndex(), "position", loc.pos)
	if err := b.log.truncateTail(loc.pos); err != nil {
		return fmt.Errorf("truncate raft log at %d: %w", first, err)
	}
	l.mu.Lock()
	l.locs = l.locs[:first-l.compIndex-1]
	for len(l.cache) > 0 && l.cache[len(l.cache)-1].Index >= first {
		l.cacheBytes -= len(l.cache[len(l.cache)-1].Data)
		l.cache = l.cache[:len(l.cache)-1]
	}
	l.mu.Unlock()
	return nil
}

// truncateTail discards the log from pos on: later segments are deleted (their directory entry
// removal fsync'd at once), the segment holding pos is cut there and the cut fsync'd.
// Replicated logs only.
func (l *commitLog) truncateTail(pos int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	removed := false
	for len(l.segs) > 1 && l.segs[len(l.segs)-1].base > pos {
		seg := l.segs[len(l.segs)-1]
		seg.f.Close()
		if err := os.Remove(filepath.Join(l.dir, segmentName(seg.base))); err != nil {
			return fmt.Errorf("delete segment %d: %w", seg.base, err)
		}
		l.segs = l.segs[:len(l.segs)-1]
		removed = true
	}
	seg := l.segs[len(l.segs)-1]
	if err := seg.f.Truncate(pos - seg.base); err != nil {
		return fmt.Errorf("truncate segment %d at %d: %w", seg.base, pos-seg.base, err)
	}
	// The cut is made durable here, not left to the next sync: that one syncs the active
	// segment only, and the append that follows may roll to a new segment at once, leaving a
	// power loss free to bring back the discarded entries in front of the new ones.
	if err := fsutil.Fdatasync(seg.f); err != nil {
		return fmt.Errorf("sync truncated segment %d: %w", seg.base, err)
	}
	if removed {
		if err := fsutil.SyncDir(l.dir); err != nil {
			return err
		}
	}
	l.end.Store(pos)
	if l.durable.Load() > pos {
		l.durable.Store(pos)
	}
	return nil
}
