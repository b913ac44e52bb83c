package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/imagomq/imago/internal/fsutil"
)

// Compaction of the replicated log. On a single node retention deletes commit-log segments
// no partition needs any more (retention.go); in cluster mode those segments are the raft log,
// and deleting them is raft log compaction. Each member compacts its own log, on its own
// retention tick, below a position that every one of these holds past:
//
//   - the first record each partition still retains (the replicated retention records moved
//     the partitions' start offsets on every member alike);
//   - its last durable checkpoint (a restart replays from there; it can never rebuild state
//     from a compacted log, so the checkpoint must cover everything deleted), and the first
//     record of each partition start that checkpoint records (a restart serves from those
//     starts until raft applies the retention records after the checkpoint again), and every
//     prepare batch that checkpoint lists (a restart reads it, also once the branch is decided);
//   - every durable XA branch (prepared, heuristically completed, or with its outcome on the
//     way) and every held coordinator decision: their batches stay in the log (a replicated log is never re-written at its
//     head as a single node's is; the branch pins the segment until it is decided);
//   - on the leader, the entries an active follower has not yet acknowledged (a follower a
//     little behind catches up from the log, not by a snapshot).
//
// Only whole segments go, never the active one. The compaction point (the index and term of the
// last entry removed) is written to raft-compacted, atomically, before any segment is deleted:
// a crash in between leaves segments below the point, which the next open deletes. A member
// whose needed entries another member compacted away catches up by a snapshot (snapshot.go).

const raftCompactedFileName = "raft-compacted"

// raftCompaction is the content of raft-compacted.
type raftCompaction struct {
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
}

func loadRaftCompaction(dir string) (raftCompaction, error) {
	var c raftCompaction
	data, err := fsutil.ReadFileDurable(filepath.Join(dir, raftCompactedFileName))
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read %s: %w", raftCompactedFileName, err)
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%w: %s: %v", ErrCorrupt, raftCompactedFileName, err)
	}
	return c, nil
}

func writeRaftCompaction(dir string, c raftCompaction) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(dir, raftCompactedFileName, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", raftCompactedFileName, err)
	}
	return nil
}

// compactionFloor is what a Proposer may also implement: the lowest raft index a follower
// that is still in touch has not yet acknowledged (math.MaxUint64 when there is none, or on a
// node that does not lead). The leader compacts nothing at or above it.
type compactionFloor interface {
	CompactionFloor() uint64
}

// firstRetainedPos is the lowest log position a partition's retained record is at
// (math.MaxInt64 when every partition is empty; 0 when a partition's position is unknown). The
// caller holds stateMu.
func (b *Broker) firstRetainedPos() int64 {
	minPos := int64(math.MaxInt64)
	for _, t := range b.table.Load().byID {
		for _, p := range t.parts {
			p.mu.RLock()
			// The first retained record pins the log; offsets lost to a dropped batch
			// (gap entries, logrepair.go) point at no position and are passed over.
			for o := p.start.Load(); o < p.written; o++ {
				e, ok := p.entry(o)
				if !ok {
					minPos = 0 // where the partition starts in the log is unknown: delete none
					break
				}
				if e != gapEntry {
					minPos = min(minPos, e.Pos)
					break
				}
			}
			p.mu.RUnlock()
		}
	}
	return minPos
}

// CompactLog deletes the commit-log segments this cluster member no longer needs (see the
// comment at the top of this file) and returns the bytes freed. The retention pass runs it
// every RetentionCheckInterval; a single node's retention deletes its segments itself.
func (b *Broker) CompactLog() (int64, error) {
	if b.rlog == nil {
		return 0, errors.New("compact log: the broker is not replicated")
	}
	b.ckptMu.Lock() // no checkpoint moves lastCkptPos, and no snapshot is being linked, meanwhile
	defer b.ckptMu.Unlock()
	b.stateMu.Lock()
	// A retention record moves the starts when it is applied, and the checkpoint that records
	// them comes after: until then the checkpoint on disk names the older starts, and a restart
	// from it serves them until raft applies the record again.
	// Nor past a prepare batch that checkpoint lists: a restart from it reads the batch, also
	// when the branch was decided after it.
	limit := min(b.firstRetainedPos(), b.lastCkptPos.Load(), b.ckptKeepPos.Load(), b.ckptPrepPos.Load(), b.appliedPos)
	b.stateMu.Unlock()
	limit = b.decisionPin(b.preparedPin(limit)) // the same pins as a single node's retention, without re-writing

	if limit <= 0 {
		return 0, nil
	}
	// The cut is the base of the first segment kept: every segment before it ends at or
	// before limit, and the active one is always kept.
	bounds := b.log.segmentBounds()
	cut := bounds[0][0]
	for i := 0; i+1 < len(bounds) && bounds[i][1] <= limit; i++ {
		cut = bounds[i+1][0]
	}
	if cut <= bounds[0][0] {
		return 0, nil
	}
	l := b.rlog
	l.mu.RLock()
	// The last entry removed is the one that ends at the cut.
	k := sort.Search(len(l.locs), func(i int) bool { return l.locs[i].pos >= cut })
	var point raftCompaction
	ok := k > 0 && k <= len(l.locs) && l.locs[k-1].pos+int64(l.locs[k-1].size) == cut
	if ok {
		point = raftCompaction{Index: l.compIndex + uint64(k), Term: l.locs[k-1].term}
	}
	l.mu.RUnlock()
	if !ok {
		return 0, fmt.Errorf("compact raft log: no entry ends at log position %d", cut)
	}
	if pr := b.currentProposer(); pr != nil {
		if f, isFloor := pr.(compactionFloor); isFloor && point.Index >= f.CompactionFloor() {
			return 0, nil // a follower still needs these entries: it catches up from the log
		}
	}
	l.readMu.Lock() // no read of an entry is under way in a segment about to go
	defer l.readMu.Unlock()
	if err := writeRaftCompaction(b.opts.Dir, point); err != nil {
		return 0, fmt.Errorf("compact raft log: %w", err)
	}
	l.mu.Lock()
	l.locs = append([]raftLoc(nil), l.locs[k:]...)
	l.compIndex, l.compTerm = point.Index, point.Term
	drop := 0
	for drop < len(l.cache) && l.cache[drop].Index <= point.Index {
		l.cacheBytes -= len(l.cache[drop].Data)
		drop++
	}
	l.cache = l.cache[drop:]
	l.mu.Unlock()
	freed, err := b.log.deleteBefore(cut)
	if err != nil {
		return freed, fmt.Errorf("compact raft log: %w", err)
	}
	b.opts.Logger.Info("raft log compacted", "through_index", point.Index, "term", point.Term, "before_position", cut, "freed_bytes", freed)
	return freed, nil
}
