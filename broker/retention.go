package broker

import (
	"math"
	"time"
)

// Retention deletes whole segments. Per partition, an index segment goes when it is not the
// last one and either its newest message is older than the topic's retention age or the
// partition without it still holds at least the topic's retention bytes; the partition's
// start offset moves past it. A commit-log segment goes when no partition still has a
// message in it (and the last checkpoint is past it). Because all partitions share the log,
// a topic with long retention keeps the log segments its messages live in; their space is
// reclaimed once every topic with data in them has let go.

func (b *Broker) runRetention() {
	defer b.wg.Done()
	tick := time.NewTicker(b.opts.RetentionCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
			b.EnforceRetention()
		}
	}
}

// EnforceRetention runs one retention pass now. It is also run every RetentionCheckInterval.
func (b *Broker) EnforceRetention() {
	if b.opts.Replicated {
		return // a replicated log keeps its segments (replicate.go)
	}
	now := b.opts.Now().UnixMilli()
	var removed []*indexSegment
	b.stateMu.Lock()
	minPos := int64(math.MaxInt64)
	changed := false
	for _, t := range b.table.Load().byID {
		age, size := b.retention(t)
		for _, p := range t.parts {
			for {
				p.mu.RLock()
				// Only segments whose every entry is durable go: the checkpoint that records
				// the new start then also records an end past it.
				if len(p.segs) < 2 || p.segs[0].base+p.entries > p.synced {
					p.mu.RUnlock()
					break
				}
				first := p.segs[0]
				segEnd := first.base + p.entries
				// An entry that cannot be read (its page faulted) is unknown, not zero: the
				// partition is left as it is rather than expired on a made-up timestamp.
				// Offsets lost to a dropped batch (gap entries) have no timestamp: the newest
				// real message decides (a segment of nothing but gaps has expired).
				newest, err := p.readEntry(segEnd - 1)
				for o := segEnd - 2; err == nil && newest == gapEntry && o >= max(p.start.Load(), first.base); o-- {
					newest, err = p.readEntry(o)
				}
				var segBytes int64
				for o := max(p.start.Load(), first.base); o < segEnd && err == nil; o++ {
					var e indexEntry
					e, err = p.readEntry(o)
					segBytes += int64(e.Size)
				}
				p.mu.RUnlock()
				if err != nil {
					b.opts.Logger.Error("retention: index unreadable, partition left as it is", "topic", t.name, "partition", p.id, "err", err)
					break
				}
				expired := age > 0 && newest.Timestamp < now-age.Milliseconds()
				oversize := size > 0 && p.bytes.Load()-segBytes >= size
				if !expired && !oversize {
					break
				}
				p.mu.Lock()
				first.removed = true
				p.segs = p.segs[1:]
				p.start.Store(segEnd)
				p.bytes.Add(-segBytes)
				p.mu.Unlock()
				removed = append(removed, first)
				changed = true
				b.opts.Logger.Info("retention removed index segment", "topic", t.name, "partition", p.id,
					"base", first.base, "expired", expired, "oversize", oversize)
			}
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
	if changed {
		b.ckptStale = true // the next checkpoint records the new start offsets
	}
	b.retired = append(b.retired, removed...)
	retire := len(b.retired) > 0
	b.stateMu.Unlock()
	if retire {
		// Record the new start offsets before the index files and the log they pointed
		// into can go: a crash before that checkpoint is durable restarts from an older
		// one, whose start offsets must still find their index (TestRetentionCrashBeforeCheckpoint).
		if err := b.checkpoint(); err != nil {
			b.opts.Logger.Error("retention: checkpoint", "err", err)
			return // the files wait for the next pass
		}
		b.removeRetired()
	}
	minPos = min(minPos, b.lastCkptPos.Load())
	if minPos > 0 && minPos < math.MaxInt64 {
		// Prepared and heuristic branches keep their batches; re-write old ones at the head
		// first.
		var compacted bool
		if first := b.log.segmentBounds(); len(first) > 1 && minPos > first[0][1] {
			limit := minPos
			minPos, compacted = b.compactPrepared(limit)
			pinned, wrote := b.compactDecisions(limit) // decisions.go
			minPos, compacted = min(minPos, pinned), compacted || wrote
		} else {
			pinned, _ := b.compactPrepared(0)
			dpinned, _ := b.compactDecisions(0)
			minPos = min(minPos, pinned, dpinned)
		}
		if compacted {
			// The checkpoint on disk names the old positions: record the new ones before the
			// segments holding the old go, or a crash in between finds the checkpoint pointing
			// into deleted log and rebuilds every index from the whole log.
			if err := b.checkpoint(); err != nil {
				b.opts.Logger.Error("retention: checkpoint after compaction", "err", err)
				return
			}
		}
	}
	if minPos > 0 {
		if freed, err := b.log.deleteBefore(minPos); err != nil {
			b.opts.Logger.Error("retention: delete log segment", "err", err)
		} else if freed > 0 {
			b.opts.Logger.Info("retention removed log segments", "bytes", freed, "before", minPos)
		}
	}
	if err := b.dedupe.Expire(); err != nil {
		b.opts.Logger.Error("retention: expire idempotency keys", "err", err)
	}
}

// removeRetired deletes the files of the index segments retention let go. Call it only once a
// durable checkpoint records start offsets past them. A removal a power loss undoes leaves a
// file below the partition's start, which recovery opens and the next pass deletes again.
func (b *Broker) removeRetired() {
	b.stateMu.Lock()
	retired := b.retired
	b.retired = nil
	b.stateMu.Unlock()
	for _, s := range retired {
		if err := s.remove(); err != nil {
			b.opts.Logger.Error("retention: remove index segment", "err", err)
		}
	}
}
