package broker

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/imagomq/imago/internal/fsutil"
)

// partition is one partition of a topic: its index segments and its offsets.
//
// Offsets: start is the first offset still stored, end the readable end (one past the last
// durable message; readers never see past it), next the next offset the flusher assigns.
type partition struct {
	t       *topic
	id      int
	dir     string
	entries int64 // entries per index segment

	mu   sync.RWMutex // guards segs; readers hold it while copying entries
	segs []*indexSegment

	start atomic.Int64
	end   atomic.Int64
	bytes atomic.Int64 // record bytes between start and the written end

	next    int64 // owned by the flusher (and by recovery before it starts)
	written int64 // entries applied to the index; guarded by the broker's stateMu
	// synced is written as of the last log fsync, and unsyncedBytes the record bytes added
	// since (both guarded by stateMu): a checkpoint records these, never more than is durable.
	synced         int64
	unsyncedBytes  int64
	pendingPublish bool // flusher only: written but waiting for an interval fsync

	nmu    sync.Mutex
	notify chan struct{} // closed and cleared when end moves; nil when nobody waits
}

// segmentFor returns the index segment holding off, or nil. The caller holds p.mu.
func (p *partition) segmentFor(off int64) *indexSegment {
	if len(p.segs) == 0 {
		return nil
	}
	i := (off - p.segs[0].base) / p.entries
	if off < p.segs[0].base || i >= int64(len(p.segs)) {
		return nil
	}
	s := p.segs[i]
	if s.base > off || off >= s.base+p.entries {
		return nil
	}
	return s
}

// entry reads the index entry of off. The caller holds p.mu (read) and off is written.
func (p *partition) entry(off int64) (indexEntry, bool) {
	e, err := p.readEntry(off)
	return e, err == nil
}

// readEntry reads the index entry of off, or fails with ErrCorrupt (no entry, or its page
// could not be read). The caller holds p.mu (read) and off is written.
func (p *partition) readEntry(off int64) (indexEntry, error) {
	s := p.segmentFor(off)
	if s == nil {
		return indexEntry{}, fmt.Errorf("%w: %s/%d has no index entry for offset %d", ErrCorrupt, p.t.name, p.id, off)
	}
	return s.load(off - s.base)
}

// writeEntry stores the entry of off, creating index segments as needed; seen is e's seenAt
// (math.MinInt64 for a gap entry). Flusher only.
func (p *partition) writeEntry(off int64, e indexEntry, seen int64) error {
	p.mu.RLock()
	s := p.segmentFor(off)
	p.mu.RUnlock()
	if s == nil {
		var err error
		if s, err = p.addSegment(off - off%p.entries); err != nil {
			return err
		}
	}
	if err := s.store(off-s.base, e); err != nil {
		return err
	}
	s.dirty = true
	s.seen = max(s.seen, seen)
	return nil
}

// addSegment creates the index segment with the given base; it must come after the last one.
func (p *partition) addSegment(base int64) (*indexSegment, error) {
	if err := fsutil.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("create index dir: %w", err)
	}
	s, err := openIndexSegment(p.dir, base, int(p.entries), true)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.segs); n > 0 && p.segs[n-1].base+p.entries != base {
		// A gap (offsets jumped, as after a rebuild from a later segment): fill it so that
		// segments stay contiguous and segmentFor stays a division.
		for b := p.segs[n-1].base + p.entries; b < base; b += p.entries {
			gap, err := openIndexSegment(p.dir, b, int(p.entries), true)
			if err != nil {
				s.close()
				return nil, err
			}
			p.segs = append(p.segs, gap)
		}
	}
	p.segs = append(p.segs, s)
	return s, nil
}

// publish moves the readable end to end and wakes waiters.
func (p *partition) publish(end int64) {
	p.end.Store(end)
	p.nmu.Lock()
	if p.notify != nil {
		close(p.notify)
		p.notify = nil
	}
	p.nmu.Unlock()
}

// waitChan returns a channel closed at the next publish.
func (p *partition) waitChan() <-chan struct{} {
	p.nmu.Lock()
	defer p.nmu.Unlock()
	if p.notify == nil {
		p.notify = make(chan struct{})
	}
	return p.notify
}

func (p *partition) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first error
	for _, s := range p.segs {
		if err := s.close(); err != nil && first == nil {
			first = err
		}
	}
	p.segs = nil
	return first
}

func (p *partition) info() PartitionInfo {
	return PartitionInfo{Partition: p.id, StartOffset: p.start.Load(), EndOffset: p.end.Load(), Bytes: p.bytes.Load()}
}
