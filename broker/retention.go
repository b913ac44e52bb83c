package broker

import (
	"math"
	"time"
)

// Retention deletes whole segments. Per partition, an index segment goes when it is not the
// last one and either its newest message is older than the topic's retention age or the
// partition without it still holds at least the topic's retention bytes; the partition's
// start offset moves past it. A commit-log segment goes when no partition still has a
// message in it, and the last checkpoint is past it and records partition starts past it (a
// restart serves from the starts the checkpoint on disk names) and lists no prepare batch in it
// (a restart reads those). Because all partitions share
// the log, a topic with long retention keeps the log segments its messages live in; their
// space is reclaimed once every topic with data in them has let go.
//
// Age is counted by the wall clock and by the monotonic clock (clock.go): a segment goes for
// its age only when both say its newest message is older than the retention age, so a step of
// the wall clock forward (NTP, a resumed VM, a wrong year set by hand) deletes nothing early,
// and messages written while the clock was behind are not taken for old once it is corrected.
// Each pass logs the segments it removes and why.

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
			if b.opts.Replicated {
				if _, err := b.CompactLog(); err != nil {
					b.opts.Logger.Error("retention: compact the raft log", "err", err)
				}
				b.removeOldSnapshots()
			}
		}
	}
}

// EnforceRetention runs one retention pass now. It is also run every RetentionCheckInterval.
// In cluster mode only the serving leader decides, and its decision is a log record that every
// member applies (retention_repl.go); each member then deletes the log segments it no longer
// needs with CompactLog, which the periodic pass also runs. Every member, leader or not,
// forgets the idempotency keys past the window itself, as a single node does.
func (b *Broker) EnforceRetention() {
	if b.opts.Replicated {
		b.proposeRetention()
		b.expireKeys()
		return
	}
	now := b.clock()
	b.stateMu.Lock()
	changed := false
	for _, t := range b.table.Load().byID {
		age, size := b.retention(t)
		for _, p := range t.parts {
			// Only segments whose every entry is durable go: the checkpoint that records the
			// new start then also records an end past it.
			if start, ok := b.retentionStart(t, p, now, age, size, p.synced); ok || staleSegments(p) {
				b.moveStartLocked(t, p, start)
				changed = true
			}
		}
	}
	minPos := b.firstRetainedPos() // raftcompact.go
	retire := changed || len(b.retired) > 0
	b.stateMu.Unlock()
	if retire {
		// Record the new start offsets before the index files and the log they pointed into
		// can go (checkpoint deletes the files once it is durable): a crash before that
		// restarts from an older checkpoint, whose start offsets must still find their index
		// (TestRetentionCrashBeforeCheckpoint).
		if err := b.checkpoint(); err != nil {
			b.opts.Logger.Error("retention: checkpoint", "err", err)
			return // the files wait for the next checkpoint
		}
	}
	// Not past where the starts of the checkpoint on disk point: a restart from it serves them.
	// They lag the starts used above when a pass's checkpoint failed and the next pass found
	// the retired segments taken by a periodic checkpoint still under way (retire false).
	minPos = min(minPos, b.lastCkptPos.Load(), b.ckptKeepPos.Load())
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
	// Not past a prepare batch the checkpoint on disk lists either: a restart from it reads the
	// batch. Compaction above re-writes such batches at the head and its checkpoint lists the
	// copies; when that checkpoint failed, the old batches stay until a later one succeeds.
	minPos = min(minPos, b.ckptPrepPos.Load())
	if minPos > 0 {
		if freed, err := b.log.deleteBefore(minPos); err != nil {
			b.opts.Logger.Error("retention: delete log segment", "err", err)
		} else if freed > 0 {
			b.opts.Logger.Info("retention removed log segments", "bytes", freed, "before", minPos)
		}
	}
	b.expireKeys()
}

// expireKeys forgets the idempotency keys past the window, in memory and their files (the
// deletions are made durable by the next checkpoint). It is local: whether a key that has left
// the window is still held or already forgotten, a batch applied with it is remembered the
// same way (dedupe.Store.Add), so members need not expire together.
func (b *Broker) expireKeys() {
	if err := b.dedupe.Expire(); err != nil {
		b.opts.Logger.Error("retention: expire idempotency keys", "err", err)
	}
}

// retentionStart returns the offset partition p of topic t would start at after dropping
// every leading index segment that retention lets go, and whether that is past its start.
// Per segment: it is not the last one, it ends at or before limit, and either its newest
// message is older than age (by both clocks: clock.go) or the partition without it still holds
// at least size bytes. The caller holds stateMu.
func (b *Broker) retentionStart(t *topic, p *partition, now reading, age time.Duration, size, limit int64) (int64, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	start := p.start.Load()
	left := p.bytes.Load()
	for i := 0; i+1 < len(p.segs); i++ {
		seg := p.segs[i]
		segEnd := seg.base + p.entries
		if segEnd > limit {
			break
		}
		if segEnd <= start {
			continue // below the start already (a file a checkpoint has yet to delete)
		}
		// An entry that cannot be read (its page faulted) is unknown, not zero: the
		// partition is left as it is rather than expired on a made-up timestamp. Offsets
		// lost to a dropped batch (gap entries) have no timestamp: the newest real message
		// decides (a segment of nothing but gaps has expired).
		newest, err := p.readEntry(segEnd - 1)
		for o := segEnd - 2; err == nil && newest == gapEntry && o >= max(start, seg.base); o-- {
			newest, err = p.readEntry(o)
		}
		var segBytes int64
		for o := max(start, seg.base); o < segEnd && err == nil; o++ {
			var e indexEntry
			e, err = p.readEntry(o)
			segBytes += int64(e.Size)
		}
		if err != nil {
			b.opts.Logger.Error("retention: index unreadable, partition left as it is", "topic", t.name, "partition", p.id, "err", err)
			break
		}
		ageMs := age.Milliseconds()
		wallOld := now.wall-newest.Timestamp > ageMs
		seen := max(seg.seen, b.foundSeen(newest.Timestamp))
		expired := age > 0 && wallOld && now.mono-seen > ageMs
		oversize := size > 0 && left-segBytes >= size
		if age > 0 && wallOld && !expired && !oversize && !seg.stepWarned {
			seg.stepWarned = true
			b.opts.Logger.Warn("retention: a segment is older than the retention age by the wall clock but not by the monotonic clock; kept until it is by both (was the clock stepped?)",
				"topic", t.name, "partition", p.id, "base", seg.base, "newest", time.UnixMilli(newest.Timestamp).UTC(),
				"retention_age", age, "monotonic_age", time.Duration(now.mono-seen)*time.Millisecond)
		}
		if !expired && !oversize {
			break
		}
		start, left = segEnd, left-segBytes
	}
	return start, start > p.start.Load()
}

// moveStartLocked moves p's start forward to start (never past what is written): the bytes
// of the dropped messages leave the partition's count, and every index segment wholly below
// the new start waits in b.retired until a checkpoint that records the start is durable. The
// caller holds stateMu.
func (b *Broker) moveStartLocked(t *topic, p *partition, start int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := p.start.Load()
	start = max(old, min(start, p.written))
	var dropped int64
	for o := old; o < start; o++ {
		if e, err := p.readEntry(o); err == nil {
			dropped += int64(e.Size)
		}
	}
	changed := start > old
	for len(p.segs) > 1 && p.segs[0].base+p.entries <= start {
		s := p.segs[0]
		p.segs = p.segs[1:]
		b.retired = append(b.retired, s)
		changed = true
		b.opts.Logger.Info("retention removed index segment", "topic", t.name, "partition", p.id, "base", s.base)
	}
	p.start.Store(start)
	p.bytes.Add(-dropped)
	if changed {
		b.ckptStale = true // the next checkpoint records the new start
	}
}

// staleSegments reports whether p still holds an index segment wholly below its start (a
// removal a crash or a power loss undid). The caller holds stateMu.
func staleSegments(p *partition) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.segs) > 1 && p.segs[0].base+p.entries <= p.start.Load()
}
