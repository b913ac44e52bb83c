package broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/imagomq/imago/broker/internal/dedupe"
)

// The flusher is the one goroutine that writes the commit log. Each round it takes every
// queued produce request (up to MaxFlushBytes), encodes them into one buffer (one batch per
// request, offsets assigned in queue order), writes it with one write(2), fsyncs once, then
// applies the index entries, publishes the new readable ends and acknowledges every request.
// Requests that arrive during the fsync wait for the next round: that is the group commit.

type pendingEntry struct {
	p   *partition
	off int64
	e   indexEntry
}

// runFlusher is the flusher's loop. With fsync "interval" it fsyncs every Interval and then
// publishes. With "never" it publishes at once and still fsyncs once per CheckpointInterval
// while there is unsynced data: a checkpoint may only name a durable position (otherwise
// retention could never reclaim the log, and after a power loss the checkpoint would point past
// the end of it).
func (b *Broker) runFlusher() {
	defer close(b.flusherDone)
	var (
		buf       []byte
		entries   []pendingEntry
		unsynced  []*partition // interval mode: written but not yet readable
		lastSync  = time.Now()
		intervalC <-chan time.Time
		timer     *time.Timer
	)
	lazy := b.opts.Fsync.Mode != FsyncAlways
	every := b.opts.Fsync.Interval
	if b.opts.Fsync.Mode == FsyncNever {
		every = b.opts.CheckpointInterval
	}
	for {
		reqs, closing := b.take(intervalC)
		if len(reqs) > 0 {
			buf, entries, unsynced = b.flush(reqs, buf[:0], entries[:0], unsynced)
		}
		if lazy && (len(unsynced) > 0 || b.log.durable.Load() < b.log.end.Load()) {
			if closing || time.Since(lastSync) >= every {
				unsynced = b.syncAndPublish(unsynced)
				lastSync = time.Now()
				if timer != nil {
					timer.Stop()
				}
				intervalC = nil
			} else if intervalC == nil {
				timer = time.NewTimer(every - time.Since(lastSync))
				intervalC = timer.C
			}
		} else if intervalC != nil && len(reqs) == 0 {
			intervalC = nil
		}
		if closing && len(reqs) == 0 {
			b.syncAndPublish(unsynced)
			return
		}
	}
}

// take waits for queued requests and takes up to MaxFlushBytes of them (at least one).
// It returns closing=true once Close was called and the queue is empty.
func (b *Broker) take(tick <-chan time.Time) (reqs []*produceReq, closing bool) {
	for {
		b.qmu.Lock()
		if len(b.queue) > 0 {
			n, size := 0, 0
			for n < len(b.queue) && (n == 0 || size+b.queue[n].size <= b.opts.MaxFlushBytes) {
				size += b.queue[n].size
				n++
			}
			reqs = make([]*produceReq, n)
			copy(reqs, b.queue[:n])
			rest := copy(b.queue, b.queue[n:])
			clear(b.queue[rest:])
			b.queue = b.queue[:rest]
			b.qbytes -= int64(size)
			b.qmu.Unlock()
			return reqs, false
		}
		closing = b.closing
		b.qmu.Unlock()
		if closing {
			return nil, true
		}
		select {
		case <-b.qsig:
		case <-tick:
			return nil, false
		}
	}
}

// flush writes reqs as one group commit and acknowledges them.
//
// Failures are answered by what is known to be stored. A request is "stored" once its bytes are
// where the policy says an acknowledgement needs them (fsync'd, or written for interval and
// never). When a write or fsync fails, the requests stored before it (an earlier part of the
// group that a segment roll fsync'd) are acknowledged and the rest fail; the broker then stops
// (fail), and the restart cuts the log at the position fail recorded, so a failed request is
// certainly not there. When something fails after the group is stored (creating an index file,
// storing an index entry), every request is acknowledged: its batch is in the log and the
// restart indexes it; only the readable ends stay where they were until then.
func (b *Broker) flush(reqs []*produceReq, buf []byte, entries []pendingEntry, unsynced []*partition) ([]byte, []pendingEntry, []*partition) {
	b.stateMu.Lock()
	failed := b.failed
	b.stateMu.Unlock()
	if failed != nil {
		for _, r := range reqs {
			r.err = failed
			close(r.done)
		}
		return buf, entries, unsynced
	}
	now, mono := b.opts.Now().UnixMilli(), b.opts.Elapsed().Milliseconds()
	var (
		writeTime time.Duration
		msgs      int
		written   int
		writeErr  error
		stored    int // reqs[:stored] are stored as the policy requires
	)
	mustSync := b.opts.Fsync.Mode == FsyncAlways
	for _, r := range reqs {
		mustSync = mustSync || r.sync
	}
	writeOut := func(upto int) {
		if len(buf) == 0 || writeErr != nil {
			return
		}
		t := time.Now()
		writeErr = b.log.write(buf)
		writeTime += time.Since(t)
		if writeErr != nil {
			return
		}
		written += len(buf)
		buf = buf[:0]
		if !mustSync {
			stored = upto
		}
	}
	for i, r := range reqs {
		if r.stale != nil && r.stale() || r.kind == batchDecision && r.decLimit >= 0 && !b.takeCompaction(r) {
			r.skipped = true
			continue
		}
		if b.log.needsRoll(len(buf) + r.size) {
			writeOut(i)
			if writeErr == nil {
				// The roll fsyncs what the segment holds: reqs[:i] are stored whatever follows.
				if writeErr = b.log.sync(); writeErr == nil {
					stored = i
					writeErr = b.log.createSegment(b.log.end.Load())
				}
			}
			if writeErr != nil {
				break // reqs[i:] get no offsets: they are not written
			}
			buf = b.appendSnapshot(buf, now)
		}
		hdr := len(buf)
		if r.kind == batchDecision {
			r.batchPos = b.log.end.Load() + int64(hdr)
			buf = b.encodeDecisions(buf, r, r.batchPos, now)
			continue
		}
		buf = grow(buf, batchHeaderSize)
		r.offsets = make([]Position, len(r.msgs))
		base := b.log.end.Load()
		r.batchPos = base + int64(hdr)
		count := len(r.msgs)
		if r.control != nil {
			buf, _ = appendRecord(buf, 0, 0, 0, now, &Message{Value: r.control})
			count++
		}
		for i := range r.msgs {
			t := r.topicOf(i)
			p := t.parts[r.parts[i]]
			off := int64(-1)
			if r.indexed {
				off = p.next
				p.next++
			}
			pos := base + int64(len(buf))
			before := len(buf)
			var crc uint32
			buf, crc = appendRecord(buf, t.id, uint32(p.id), off, now, &r.msgs[i])
			if r.indexed {
				entries = append(entries, pendingEntry{p: p, off: off, e: indexEntry{Pos: pos, Size: uint32(len(buf) - before), CRC: crc, Timestamp: now}})
			}
			r.offsets[i] = Position{Partition: p.id, Offset: off}
		}
		if len(r.decisions) > 0 { // a commit that carries the coordinator's decision (decisions.go)
			buf = b.appendDecisionRecords(buf, r.decisions, r.batchPos, now)
			count += len(r.decisions)
		}
		h := batchHeader{Length: uint32(len(buf) - hdr), Type: r.kind, Count: uint32(count), Timestamp: now}
		if r.hasKey {
			h.Flags |= batchFlagKey
			h.Key = r.key
			h.Fingerprint = r.fp
		}
		putBatchHeader(buf[hdr:], h)
		msgs += len(r.msgs)
	}
	writeOut(len(reqs))
	var syncTime time.Duration
	if writeErr == nil && mustSync {
		t := time.Now()
		if writeErr = b.log.sync(); writeErr == nil {
			stored = len(reqs)
		}
		syncTime = time.Since(t)
	}
	if writeErr != nil {
		reqErr := b.fail(writeErr, reqs[stored:])
		b.answerStored(reqs[:stored], reqErr, now)
		return buf[:0], entries[:0], unsynced
	}

	b.stateMu.Lock()
	var indexErr error
	for _, pe := range entries {
		// Written now, at now: as young as can be by both clocks (clock.go).
		if indexErr = pe.p.writeEntry(pe.off, pe.e, mono); indexErr != nil {
			break
		}
	}
	if indexErr == nil {
		b.settle(reqs, now)
		for _, pe := range entries {
			pe.p.bytes.Add(int64(pe.e.Size))
			pe.p.unsyncedBytes += int64(pe.e.Size)
		}
		b.appliedPos = b.log.end.Load()
		for _, pe := range entries {
			pe.p.written = pe.p.next
		}
		if mustSync && b.log.durable.Load() == b.appliedPos {
			if b.opts.Fsync.Mode == FsyncAlways {
				for _, pe := range entries { // every earlier flush was synced too
					pe.p.synced, pe.p.unsyncedBytes = pe.p.written, 0
				}
				b.syncedPos, b.syncedDedupe = b.appliedPos, b.dedupe.Mark()
			} else {
				b.markSyncedLocked()
			}
		}
	}
	b.stateMu.Unlock()
	if indexErr != nil {
		// Stored but not indexed: acknowledged, not readable until the restart indexes it
		// (unless fail's last fsync failed too: answerStored).
		reqErr := b.fail(indexErr, nil)
		b.answerStored(reqs, reqErr, now)
		return buf, entries[:0], unsynced
	}

	// Publish: every touched partition's readable end moves to its next offset. In interval mode
	// it waits for the next fsync, unless this group was fsync'd (it held a transaction record):
	// then everything written so far is durable and readable.
	if mustSync && b.opts.Fsync.Mode == FsyncInterval {
		for _, p := range unsynced {
			p.pendingPublish = false
			p.publish(p.written)
		}
		unsynced = unsynced[:0]
	}
	for _, pe := range entries {
		if pe.p.end.Load() == pe.p.written {
			continue
		}
		if b.opts.Fsync.Mode == FsyncInterval && !mustSync {
			if !pe.p.pendingPublish {
				pe.p.pendingPublish = true
				unsynced = append(unsynced, pe.p)
			}
			continue
		}
		pe.p.publish(pe.p.written)
	}
	for _, r := range reqs {
		close(r.done)
	}
	b.stats.messagesIn.Add(int64(msgs))
	b.stats.bytesIn.Add(int64(written))
	if b.opts.Observer != nil {
		b.opts.Observer.Flushed(FlushStats{Requests: len(reqs), Messages: msgs, Bytes: written, Write: writeTime, Sync: syncTime})
	}
	if b.appliedPos-b.lastCkptPos.Load() >= b.opts.CheckpointBytes {
		select {
		case b.ckptSig <- struct{}{}:
		default:
		}
	}
	return buf, entries[:0], unsynced
}

// answerStored answers reqs, stored as the policy requires, once fail has recorded the durable
// end of the log, where the restart cuts it: those below it are settled and acknowledged, the
// rest get reqErr. With fsync interval or never a request counts as stored once written, but
// when the fsync after it failed (a segment roll's, or fail's last one) it lies past that end
// and is cut: acknowledging it (and answering its key "duplicate") would lose an acknowledged
// message. The durable end is a batch boundary: a batch that starts below it is wholly below.
func (b *Broker) answerStored(reqs []*produceReq, reqErr error, now int64) {
	durable := b.log.durable.Load()
	kept := reqs[:0:0]
	for _, r := range reqs {
		if r.skipped || r.batchPos < durable {
			kept = append(kept, r)
			continue
		}
		r.err = reqErr
		close(r.done)
	}
	b.stateMu.Lock()
	b.settle(kept, now)
	b.stateMu.Unlock()
	for _, r := range kept {
		close(r.done)
	}
}

// settle does what a stored request needs besides its index entries: its transaction callback
// and its idempotency key. The caller holds stateMu.
func (b *Broker) settle(reqs []*produceReq, now int64) {
	for _, r := range reqs {
		if r.applied != nil && !r.skipped {
			r.applied(r.batchPos)
		}
		if r.hasKey {
			e := dedupe.Entry{Key: r.key, Fingerprint: r.fp, Time: now, Offsets: make([]dedupe.Position, len(r.offsets))}
			for i, o := range r.offsets {
				e.Offsets[i] = dedupe.Position{Partition: int32(o.Partition), Offset: o.Offset}
			}
			if err := b.dedupe.Add(e); err != nil {
				b.opts.Logger.Error("idempotency store add failed", "err", err)
				b.idempotencyFailedLocked()
			}
			if b.opts.Fsync.Mode != FsyncAlways && r.batchPos >= b.log.durable.Load() {
				if b.unsyncedKeys == nil {
					b.unsyncedKeys = make(map[dedupe.Key]int64)
				}
				b.unsyncedKeys[r.key] = r.batchPos
			}
		}
	}
}

// syncAndPublish (interval and never mode, and at close) fsyncs, records the synced state for
// checkpoints and then makes the written messages of ps readable. After a failed fsync it never
// publishes again (commitLog.sync keeps failing).
func (b *Broker) syncAndPublish(ps []*partition) []*partition {
	if err := b.log.sync(); err != nil {
		b.fail(err, nil)
		return ps
	}
	b.stateMu.Lock()
	if b.failed == nil && b.log.durable.Load() >= b.appliedPos {
		b.markSyncedLocked()
	}
	b.stateMu.Unlock()
	for _, p := range ps {
		p.pendingPublish = false
		p.publish(p.written)
	}
	return ps[:0]
}

// stopWrites puts the broker in the failed state after a periodic checkpoint failed (a full
// disk, or an fsync error on an index or idempotency file, which a retry could not be trusted
// after). The log itself is intact, so nothing is cut at the restart; but without checkpoints
// retention cannot reclaim space and a failed index fsync would be trusted by the next attempt,
// so writes stop (503, /readyz 503) until a restart, which replays from the last checkpoint.
func (b *Broker) stopWrites(err error) {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	if b.failed == nil {
		b.setFailedLocked(fmt.Errorf("%w: %w, restart required: %v", ErrClosed, ErrStorage, err))
		b.opts.Logger.Error("checkpoint failed; refusing writes until restart", "err", err)
	}
}

// markSyncedLocked records the current state as durable: the log is fsync'd up to appliedPos.
// The caller holds stateMu.
func (b *Broker) markSyncedLocked() {
	for _, t := range b.table.Load().byID {
		for _, p := range t.parts {
			p.synced, p.unsyncedBytes = p.written, 0
		}
	}
	b.syncedPos, b.syncedDedupe = b.appliedPos, b.dedupe.Mark()
	clear(b.unsyncedKeys)
}

// fail puts the broker in the failed state after a write, fsync or index error: after a failed
// fsync the kernel's view of the file is unknown, so nothing more is written until a restart
// recovers the log from disk. The first failure records the durable end of the log in the fail
// mark (failmark.go), after one last fsync when none has failed yet (fsync interval or never:
// what was acknowledged after write(2) is kept if it can still be made durable); the restart
// cuts the log there, so reqs (answered with the error) are certainly not stored. When the mark
// cannot be recorded, the log is cut at once instead (cutUnrecorded); when that fails too, reqs
// are answered ErrOutcomeUnknown. It returns the error reqs were answered with. Flusher only
// (tests call it while the flusher is idle).
func (b *Broker) fail(err error, reqs []*produceReq) error {
	err = fmt.Errorf("%w: %w, restart required: %v", ErrClosed, ErrStorage, err)
	b.logFailed.Store(true)
	b.stateMu.Lock()
	b.setFailedLocked(err)
	b.stateMu.Unlock()
	reqErr := err
	// The first failure of the log itself records the mark, also when a failed checkpoint or
	// idempotency store had already stopped writes (b.failed set, no mark): a request in the
	// flush that was under way then is answered with this error and must be cut at the restart.
	first := !b.failMarked
	b.failMarked = true
	if first {
		if serr := b.log.sync(); serr != nil && !errors.Is(err, serr) {
			b.opts.Logger.Error("fsync after a failure failed too", "err", serr)
		}
		pos := b.log.durable.Load()
		b.opts.Logger.Error("storage failed; refusing writes until restart", "err", err, "durable_end", pos)
		if b.fmark != nil {
			if merr := b.fmark.record(pos); merr != nil && !b.cutUnrecorded(pos, merr) {
				b.failUnknown = fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
			}
		}
	}
	if b.failUnknown != nil {
		reqErr = b.failUnknown
	}
	for _, r := range reqs {
		r.err = reqErr
		close(r.done)
	}
	return reqErr
}

// appendSnapshot writes the snapshot batch that starts every new segment: every partition's
// next offset, so a rebuild that starts at this segment knows them all.
func (b *Broker) appendSnapshot(buf []byte, now int64) []byte {
	hdr := len(buf)
	buf = grow(buf, batchHeaderSize)
	var count uint32
	for _, t := range b.table.Load().byID {
		for _, p := range t.parts {
			buf, _ = appendRecord(buf, t.id, uint32(p.id), p.next, now, &Message{})
			count++
		}
	}
	putBatchHeader(buf[hdr:], batchHeader{Length: uint32(len(buf) - hdr), Type: batchSnapshot, Count: count, Timestamp: now})
	return buf
}
