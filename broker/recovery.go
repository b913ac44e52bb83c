package broker

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imagomq/imago/broker/internal/dedupe"
	"github.com/imagomq/imago/internal/fsutil"
)

// Recovery on open:
//  1. With a readable checkpoint, load each partition's index segments and check the last
//     checkpointed entry against the record it points to. Any mismatch (a missing or damaged
//     index), a checkpoint past the end of the log, or no checkpoint at all means a full
//     rebuild: the index directory is dropped and the whole log is replayed.
//  2. Replay the log from the checkpoint position: every batch is verified (header CRC, each
//     record's CRC, record count) and its records are re-indexed. The keys of the replayed
//     batches are held (holdKey) and, once recovery is done and the idempotency store open,
//     remembered again (addHeldKeys): they are aged against the newest timestamp the whole
//     replay read (clock.go).
//     When the store finds its files damaged below their checkpointed point (dedupe.Open), it
//     sets them aside and the keys of the whole log are remembered again instead (rebuildKeys).
//  3. The first batch that fails verification is the torn tail when no valid batch follows it
//     anywhere in the log: the log is cut there. The cut bytes are copied to repair/ first, and
//     any later segment is moved there whole, so nothing is destroyed silently. When a valid
//     batch follows, it is corruption: start-up refuses and cuts nothing (verify.go).
//  4. Everything replayed is fdatasync'd (and log/ fsync'd) before any of it is published,
//     checkpointed or used to answer a retried Idempotency-Key. After a kill -9 the log can
//     hold a batch that was written but never synced (the process died in fdatasync, its
//     producer never acknowledged): it is still in the page cache, so replay finds it. Serving
//     it, or answering its retry "duplicate", promises it is stored; a power loss before the
//     kernel writes it back would break that promise. One fsync per segment at start-up keeps
//     it.

// errRebuild asks for a full rebuild.
var errRebuild = errors.New("index does not match the log")

// recover returns the log position from which the idempotency keys of the log are not in the
// store's files (the checkpoint's position; the log's start without one): addHeldKeys adds them.
func (b *Broker) recover(cp *checkpointFile) (int64, error) {
	if cp != nil {
		err := b.loadIndexes(cp)
		if err == nil {
			err = b.restoreTxs(cp.Txs)
		}
		if err == nil {
			err = b.restoreDecisions(cp.Decisions)
		}
		if err == nil {
			err = b.replay(cp.Position, false)
		}
		if err == nil {
			return cp.Position, nil
		}
		if !errors.Is(err, errRebuild) {
			return 0, err
		}
		b.opts.Logger.Warn("rebuilding every index from the log", "reason", err)
	}
	if err := b.resetIndexes(); err != nil {
		return 0, err
	}
	clear(b.txs)
	clear(b.decisions)
	clear(b.decPending)
	dedupeFrom := b.log.start()
	if cp != nil {
		dedupeFrom = cp.Position
		// Decisions whose batches retention deleted live only in the checkpoint: keep them
		// (later batches in the log override them).
		if err := b.restoreDecisions(cp.Decisions); err != nil {
			return 0, err
		}
		// Heuristic outcomes whose batches retention deleted live only in the checkpoint:
		// keep them (a forget later in the log still removes them).
		var heur []checkpointTx
		for _, c := range cp.Txs {
			if c.State == TxHeurCommitted || c.State == TxHeurRolledBack {
				heur = append(heur, c)
			}
		}
		if err := b.restoreTxs(heur); err != nil {
			return 0, err
		}
	}
	if err := b.replay(b.log.start(), true); err != nil {
		return 0, err
	}
	if b.gapSeen && cp != nil {
		if err := b.keepDroppedPrepares(cp); err != nil {
			return 0, err
		}
		b.keepDroppedDecisions(cp)
		return dedupeFrom, b.keepDroppedEnds(cp)
	}
	return dedupeFrom, nil
}

// keepDroppedPrepares runs after a full rebuild that met a dropped batch. A branch the
// checkpoint lists as prepared, whose prepare batch is now that gap and which no later batch
// decided, had its messages in the dropped bytes: it cannot be committed. Forgetting it would
// answer the transaction manager's commit with XAER_NOTA, which managers take for "already
// committed", leaving the global transaction half committed unseen; so it comes back as
// heuristically rolled back (XA_HEURRB until forgotten), which the next checkpoint records.
func (b *Broker) keepDroppedPrepares(cp *checkpointFile) error {
	for _, c := range cp.Txs {
		if c.State != TxPrepared || b.txs[c.Key] != nil || !b.gapAt(c.Pos) {
			continue
		}
		decided, err := b.decidedAfter(c.Key, c.Pos)
		if err != nil {
			return err
		}
		if decided {
			continue
		}
		xid, err := ParseXid(c.Key)
		if err != nil {
			return fmt.Errorf("checkpoint names transaction %q: %w", c.Key, err)
		}
		b.opts.Logger.Error("the prepare batch of a prepared branch was dropped as corrupt: its messages are lost and the branch is now heuristically rolled back",
			"xid", c.Key, "position", c.Pos)
		b.txs[c.Key] = &tx{key: c.Key, xa: true, xid: xid, state: TxHeurRolledBack, preparePos: c.Pos, durable: true, created: b.opts.Now()}
	}
	return nil
}

// keepDroppedDecisions runs after a full rebuild that met a dropped batch. A branch the replay
// left prepared, whose prepare batch lies before the checkpoint's position and which the
// checkpoint does not list, was decided (committed, rolled back or forgotten) before that
// checkpoint, and the record of the decision is gone: the dropped batch held it. Left prepared,
// a transaction manager's commit would append its messages again at new offsets (a committed
// branch's messages twice); so it comes back heuristically rolled back: a commit is answered
// XA_HEURRB, and the operator finds the xid in the log.
//
// The rule cannot fire without a dropped batch after the prepare. Without one, the replay
// removes every branch decided before the checkpoint: checkpointTxs lists each durable branch
// whose prepare batch lies before the checkpoint's position (the position is never past what
// was applied, and a prepare's applied callback makes it durable), so a branch missing from
// the list had its decision applied, which needs its record durable in the log after the
// prepare; retention deletes only a prefix of the log, so it cannot delete that record and keep
// the prepare; a crash only tears what was never fsync'd. Compaction re-writes a prepared
// branch at the head: the replay then ends with the copy's position, and a copy at or past
// the checkpoint's position is not judged here (the checkpoint did not see it); a copy before
// it was listed.
func (b *Broker) keepDroppedDecisions(cp *checkpointFile) {
	listed := make(map[string]bool, len(cp.Txs))
	for _, c := range cp.Txs {
		listed[c.Key] = true
	}
	for key, t := range b.txs {
		if !t.xa || t.state != TxPrepared || listed[key] || t.preparePos >= cp.Position || b.lastGapPos <= t.preparePos {
			continue
		}
		b.opts.Logger.Error("a prepared branch was decided before the last checkpoint and the record of its decision was dropped as corrupt: "+
			"it is now heuristically rolled back (a commit is answered XA_HEURRB); if it had been committed, its messages were in the dropped batch",
			"xid", key, "prepare_position", t.preparePos, "checkpoint_position", cp.Position)
		t.state, t.msgs, t.topics, t.parts, t.bytes = TxHeurRolledBack, nil, nil, nil, 0
	}
}

// gapAt reports whether the batch at pos is a dropped batch's gap.
func (b *Broker) gapAt(pos int64) bool {
	hdr := make([]byte, batchHeaderSize)
	if b.log.readAt(hdr, pos) != nil {
		return false
	}
	h, err := parseBatchHeader(hdr)
	return err == nil && h.Type == batchGap
}

// decidedAfter reports whether a transaction batch after pos other than a prepare names key.
func (b *Broker) decidedAfter(key string, pos int64) (bool, error) {
	end := b.log.end.Load()
	rd := newLogReader(b.log, pos, end)
	var recs []record
	for pos < end {
		raw, err := rd.batch(pos)
		if err != nil {
			return false, fmt.Errorf("look for a decision on %s: %w", key, err)
		}
		bv, err := decodeBatch(raw, recs)
		if err != nil {
			return false, fmt.Errorf("look for a decision on %s: %w", key, err)
		}
		recs = bv.Records
		if bv.Header.Type == batchTx && len(recs) > 0 && len(recs[0].Value) > 0 &&
			recs[0].Value[0] != txOpPrepare && string(recs[0].Value[1:]) == key {
			return true, nil
		}
		pos += int64(bv.Header.Length)
	}
	return false, nil
}

// keepDroppedEnds runs after a full rebuild that met a batch an operator dropped
// (logrepair.go). When that batch held a partition's last messages, no later record says that
// their offsets were used, but they were acknowledged (consumers may have committed past them,
// and the idempotency store may name them): the checkpoint's end of the partition is kept, the
// offsets between are marked lost like any other dropped offset, and new messages start after.
func (b *Broker) keepDroppedEnds(cp *checkpointFile) error {
	for _, c := range cp.Partitions {
		t, ok := b.table.Load().byID[c.Topic]
		if !ok || c.Partition >= len(t.parts) {
			continue
		}
		p := t.parts[c.Partition]
		if c.End <= p.next {
			continue
		}
		if p.next == p.start.Load() && c.Start > p.next {
			p.next = min(c.Start, c.End) // nothing replayed: retention had deleted the rest
			p.start.Store(p.next)
		}
		if p.next < c.End {
			b.opts.Logger.Warn("offsets lost to a dropped corrupt batch", "topic", t.name, "partition", p.id, "from", p.next, "to", c.End-1)
		}
		for ; p.next < c.End; p.next++ {
			if err := p.writeEntry(p.next, gapEntry, math.MinInt64); err != nil {
				return err
			}
		}
		p.written = p.next
		p.publish(p.next)
	}
	return nil
}

// loadIndexes opens every partition's index segments and restores its offsets from cp.
func (b *Broker) loadIndexes(cp *checkpointFile) error {
	if cp.Position > b.log.end.Load() || cp.Position < b.log.start() {
		return fmt.Errorf("%w: checkpoint position %d outside the log [%d, %d]", errRebuild, cp.Position, b.log.start(), b.log.end.Load())
	}
	state := make(map[[2]int64]checkpointPart, len(cp.Partitions))
	for _, c := range cp.Partitions {
		state[[2]int64{int64(c.Topic), int64(c.Partition)}] = c
	}
	for _, t := range b.table.Load().byID {
		for _, p := range t.parts {
			c, ok := state[[2]int64{int64(t.id), int64(p.id)}]
			if !ok {
				// Created after the checkpoint: whatever index it has is replayed anew.
				if err := os.RemoveAll(p.dir); err != nil {
					return fmt.Errorf("reset index of %s/%d: %w", t.name, p.id, err)
				}
				continue
			}
			bases, err := listIndexSegments(p.dir)
			if err != nil {
				return fmt.Errorf("list index of %s/%d: %w", t.name, p.id, err)
			}
			for i, base := range bases {
				if base%p.entries != 0 || (i > 0 && base != bases[i-1]+p.entries) {
					return fmt.Errorf("%w: index segments of %s/%d are not contiguous", errRebuild, t.name, p.id)
				}
				s, err := openIndexSegment(p.dir, base, int(p.entries), false)
				if err != nil {
					return fmt.Errorf("%w: %v", errRebuild, err)
				}
				p.segs = append(p.segs, s)
			}
			start := c.Start
			if len(p.segs) > 0 && p.segs[0].base > start {
				start = p.segs[0].base // retention deleted segments after the checkpoint
			}
			if start > c.End {
				start = c.End
			}
			p.start.Store(start)
			p.next, p.written = c.End, c.End
			p.bytes.Store(c.Bytes)
			if c.End > start {
				if err := b.verifyEntry(p, c.End-1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// verifyEntry checks that the index entry of off points at the record it should. Offsets lost
// to a dropped batch (gap entries, logrepair.go) point at nothing: the last entry before them
// is checked instead, and a run of gaps down to the start is accepted as it is.
func (b *Broker) verifyEntry(p *partition, off int64) error {
	e, ok := p.entry(off)
	for ok && e == gapEntry && off > p.start.Load() {
		off--
		e, ok = p.entry(off)
	}
	if !ok {
		return fmt.Errorf("%w: %s/%d has no index entry for offset %d", errRebuild, p.t.name, p.id, off)
	}
	if e == gapEntry {
		return nil
	}
	if e.Size < recordHeaderSize || e.Size > maxBatchBytes {
		return fmt.Errorf("%w: %s/%d offset %d has a bad index entry", errRebuild, p.t.name, p.id, off)
	}
	buf := make([]byte, e.Size)
	if err := b.log.readAt(buf, e.Pos); err != nil {
		return fmt.Errorf("%w: %s/%d offset %d: %v", errRebuild, p.t.name, p.id, off, err)
	}
	r, err := decodeRecord(buf)
	if err != nil || r.TopicID != p.t.id || int(r.Partition) != p.id || r.Offset != off || r.CRC != e.CRC {
		return fmt.Errorf("%w: %s/%d offset %d does not point at its record", errRebuild, p.t.name, p.id, off)
	}
	return nil
}

// resetIndexes drops every index so a full replay can rebuild them.
func (b *Broker) resetIndexes() error {
	for _, t := range b.table.Load().byID {
		for _, p := range t.parts {
			if err := p.close(); err != nil {
				return err
			}
			p.start.Store(0)
			p.end.Store(0)
			p.bytes.Store(0)
			p.next, p.written = 0, 0
		}
	}
	if err := os.RemoveAll(filepath.Join(b.opts.Dir, "index")); err != nil {
		return fmt.Errorf("reset indexes: %w", err)
	}
	return nil
}

// replay re-indexes the log from pos to its end and cuts a torn tail. In a rebuild, a
// partition's first record (or snapshot) sets its start. The timestamps it reads count for
// b.found (clock.go); the idempotency keys are held for the store (holdKey).
func (b *Broker) replay(pos int64, rebuild bool) error {
	b.held = b.held[:0] // a rebuild replays again from the start
	from := pos
	end := b.log.end.Load()
	byID := b.table.Load().byID
	rd := newLogReader(b.log, pos, end)
	var recs []record
	var cut error
	for pos < end {
		raw, err := rd.batch(pos)
		if err != nil {
			cut = err
			break
		}
		bv, err := decodeBatch(raw, recs)
		if err != nil {
			cut = err
			break
		}
		recs = bv.Records
		if bv.Header.Type != batchGap { // a gap's time is the repair's, not the data's
			b.found = max(b.found, bv.Header.Timestamp)
		}
		if err := b.applyReplayed(pos, bv, byID, rebuild, false); err != nil {
			return err // errRebuild makes recover start over with a full rebuild
		}
		pos += int64(bv.Header.Length)
	}
	if cut != nil {
		if err := b.checkTail(pos, end, cut); err != nil { // verify.go: corruption, not a torn tail
			return err
		}
		if err := b.cutTail(pos, end, cut); err != nil {
			return err
		}
	}
	if err := b.syncReplayed(from); err != nil {
		return err
	}
	for _, t := range byID {
		for _, p := range t.parts {
			p.written = p.next
			p.publish(p.next)
		}
	}
	b.appliedPos = pos
	b.stats.recovered = pos - from
	return nil
}

// syncReplayed makes the log from pos to its end durable (step 4 above): every segment that
// holds bytes at or after pos, and the log directory. Only then is log.durable its end.
func (b *Broker) syncReplayed(pos int64) error {
	l := b.log
	l.mu.RLock()
	segs := append([]*segment(nil), l.segs...)
	l.mu.RUnlock()
	for i, s := range segs {
		if i+1 < len(segs) && segs[i+1].base <= pos {
			continue // wholly before pos: covered by the checkpoint
		}
		if err := fsutil.Fdatasync(s.f); err != nil {
			return fmt.Errorf("recovery: sync segment %d: %w", s.base, err)
		}
	}
	if err := fsutil.SyncDir(l.dir); err != nil {
		return fmt.Errorf("recovery: %w", err)
	}
	l.durable.Store(l.end.Load())
	return nil
}

func (b *Broker) applyReplayed(pos int64, bv batchView, byID map[uint32]*topic, rebuild, addDedupe bool) error {
	if bv.Header.Magic == raftMagic && !b.opts.Replicated {
		return fmt.Errorf("log position %d holds raft entry %d: this data directory belongs to a cluster member; start it with its cluster configuration", pos, bv.Header.RaftIndex)
	}
	switch bv.Header.Type {
	case batchGap: // logrepair.go
		b.opts.Logger.Warn("the log holds a corrupt batch an operator dropped; the offsets it held are skipped",
			"position", pos, "bytes", bv.Header.Length)
		b.gapSeen = true
		b.lastGapPos = max(b.lastGapPos, pos)
		return nil
	case batchTx:
		return b.replayTx(pos, bv, byID, rebuild)
	case batchDecision:
		return b.replayDecisions(pos, bv)
	case batchSnapshot:
		for _, r := range bv.Records {
			t, ok := byID[r.TopicID]
			if !ok || int(r.Partition) >= len(t.parts) {
				continue // a topic the snapshot knew and topics.json does not: nothing to keep
			}
			p := t.parts[r.Partition]
			if rebuild && r.Offset > p.next && p.next == p.start.Load() {
				p.next = r.Offset
				p.start.Store(r.Offset)
			}
		}
		return nil
	}
	offsets, err := b.indexReplayed(bv.Records, pos+int64(bv.Header.size()), byID, rebuild)
	if err != nil {
		return err
	}
	if bv.Header.Flags&batchFlagKey != 0 {
		if addDedupe {
			return b.replayKey(pos, keyEntry(bv.Header, offsets))
		}
		b.holdKey(pos, keyEntry(bv.Header, offsets))
	}
	return nil
}

// keyEntry is the idempotency entry of the keyed batch of header h stored at offsets.
func keyEntry(h batchHeader, offsets []dedupe.Position) dedupe.Entry {
	return dedupe.Entry{Key: h.Key, Fingerprint: h.Fingerprint, Time: h.Timestamp, Offsets: offsets}
}

// heldKey is the idempotency key of a batch Open's replay read at pos.
type heldKey struct {
	pos int64
	e   dedupe.Entry
}

// holdKey keeps the key of the keyed batch replayed at pos for addHeldKeys. Keys past the window
// against the wall clock at Open and the newest timestamp read so far, whichever is earlier, are
// dropped whenever the list has doubled: the store would ignore them (their age at Open is at
// least that, clock.go), so a replay of a whole log holds no more than the window's keys.
func (b *Broker) holdKey(pos int64, e dedupe.Entry) {
	if n := len(b.held); n >= 1024 && n == cap(b.held) {
		oldest := min(b.found, b.opened.wall) - b.opts.IdempotencyWindow.Milliseconds()
		b.held = slices.DeleteFunc(b.held, func(k heldKey) bool { return k.e.Time < oldest })
	}
	b.held = append(b.held, heldKey{pos: pos, e: e})
}

// addHeldKeys remembers again, once the store is open, the idempotency keys of the batches the
// replay read from pos on (those before it are in the store's files), aged against the newest
// timestamp the whole replay read (clock.go).
func (b *Broker) addHeldKeys(pos int64) error {
	for _, k := range b.held {
		if k.pos < pos {
			continue
		}
		if err := b.replayKey(k.pos, k.e); err != nil {
			return err
		}
	}
	return nil
}

// replayKey remembers the idempotency key of the keyed batch at pos again. The store ignores
// one past the window, by both clocks, and ages one the broker's data held at Open as found
// then (clock.go).
func (b *Broker) replayKey(pos int64, e dedupe.Entry) error {
	if err := b.dedupe.Add(e); err != nil {
		if b.dedupe.Err() != nil {
			return fmt.Errorf("replay idempotency key: %w", err)
		}
		// A refused entry (not a store failure) must not keep the broker from opening.
		b.opts.Logger.Warn("replay: idempotency key not remembered", "position", pos, "err", err)
	}
	return nil
}

// replayKeys remembers again the idempotency keys of the message batches from pos to the end
// of what recovery applied, read from the log (rebuildKeys: the whole log after damage).
func (b *Broker) replayKeys(pos int64) error {
	end := b.appliedPos
	rd := newLogReader(b.log, pos, end)
	var recs []record
	for pos < end {
		raw, err := rd.batch(pos)
		if err != nil {
			return fmt.Errorf("replay idempotency keys: %w", err)
		}
		h, err := parseBatchHeader(raw)
		if err != nil {
			return fmt.Errorf("replay idempotency keys: %w", err)
		}
		if h.Type == batchMessages && h.Flags&batchFlagKey != 0 {
			bv, err := decodeBatch(raw, recs)
			if err != nil {
				return fmt.Errorf("replay idempotency keys: %w", err)
			}
			recs = bv.Records
			offsets := make([]dedupe.Position, len(recs))
			for i, r := range recs {
				offsets[i] = dedupe.Position{Partition: int32(r.Partition), Offset: r.Offset}
			}
			if err := b.replayKey(pos, keyEntry(h, offsets)); err != nil {
				return err
			}
		}
		pos += int64(h.Length)
	}
	return nil
}

// rebuildKeys runs at Open when the idempotency store found damage inside its durable range
// (dedupe.Open): the damaged files are copied to repairDir and cut at the damage, and the keys
// they held would be forgotten. Every keyed batch the log holds, from its start to the end of
// what recovery applied, is remembered again (the store skips a key past the window or already
// held); a cluster member's entries after that come with raft's re-delivery as usual. Keys of
// batches retention or compaction already deleted cannot be known: the log line says when the
// log starts inside the window.
func (b *Broker) rebuildKeys(damaged []dedupe.Damage, repairDir string) error {
	start := b.log.start()
	before := b.dedupe.Len()
	if err := b.replayKeys(start); err != nil {
		return err
	}
	b.stats.dedupeDamaged = len(damaged)
	what := make([]string, len(damaged))
	for i, d := range damaged {
		what[i] = d.String()
	}
	args := []any{"damage", strings.Join(what, "; "), "repair_dir", repairDir,
		"log_start", start, "keys_held", b.dedupe.Len(), "keys_added", b.dedupe.Len() - before}
	msg := "idempotency files damaged inside their durable range: set aside and rebuilt from the commit log"
	if first, ok := b.firstBatchTime(start); start > 0 && (!ok || b.dedupe.Remembers(first-1)) {
		// Retention deleted the start of the log within the window.
		msg += "; the log no longer holds the whole idempotency window, so keys older than the log's start cannot be known: " +
			"a retry of such a request is stored again"
		if ok {
			args = append(args, "log_start_time", time.UnixMilli(first).UTC().Format(time.RFC3339Nano))
		}
	}
	b.opts.Logger.Error(msg, args...)
	return nil
}

// firstBatchTime returns the timestamp of the batch at pos, the log's start.
func (b *Broker) firstBatchTime(pos int64) (int64, bool) {
	if pos >= b.appliedPos {
		return 0, false
	}
	raw, err := newLogReader(b.log, pos, b.appliedPos).batch(pos)
	if err != nil {
		return 0, false
	}
	h, err := parseBatchHeader(raw)
	if err != nil {
		return 0, false
	}
	return h.Timestamp, true
}

// indexReplayed re-indexes records that start at log position recPos.
func (b *Broker) indexReplayed(recs []record, recPos int64, byID map[uint32]*topic, rebuild bool) ([]dedupe.Position, error) {
	offsets := make([]dedupe.Position, 0, len(recs))
	c := b.clock() // replayed at Open, or applied by a cluster member: as old as the wall clock says now
	for _, r := range recs {
		t, ok := byID[r.TopicID]
		if !ok || int(r.Partition) >= len(t.parts) {
			return nil, fmt.Errorf("%w: record at %d names topic id %d partition %d, which do not exist", errRebuild, recPos, r.TopicID, r.Partition)
		}
		p := t.parts[r.Partition]
		if rebuild && r.Offset > p.next && p.next == p.start.Load() {
			// The partition's earlier records were deleted by retention.
			p.next = r.Offset
			p.start.Store(r.Offset)
		}
		if r.Offset > p.next && b.gapSeen {
			b.opts.Logger.Warn("offsets lost to a dropped corrupt batch", "topic", t.name, "partition", p.id, "from", p.next, "to", r.Offset-1)
			for ; p.next < r.Offset; p.next++ {
				if err := p.writeEntry(p.next, gapEntry, math.MinInt64); err != nil {
					return nil, err
				}
			}
		}
		if r.Offset != p.next {
			return nil, fmt.Errorf("%w: record at %d has offset %d, partition %s/%d expects %d", errRebuild, recPos, r.Offset, t.name, p.id, p.next)
		}
		if err := p.writeEntry(r.Offset, indexEntry{Pos: recPos, Size: uint32(r.Size), CRC: r.CRC, Timestamp: r.Timestamp}, seenAt(r.Timestamp, c)); err != nil {
			return nil, err
		}
		p.next++
		p.bytes.Add(int64(r.Size))
		offsets = append(offsets, dedupe.Position{Partition: int32(p.id), Offset: r.Offset})
		recPos += int64(r.Size)
	}
	return offsets, nil
}

// cutTail truncates the log at pos after saving the bytes [pos, end) under repair/.
func (b *Broker) cutTail(pos, end int64, why error) error {
	repair := filepath.Join(b.opts.Dir, "repair", strconv.FormatInt(b.opts.Now().UnixMilli(), 10))
	active := b.log.activeBase()
	saveEnd := end
	if active > pos {
		saveEnd = min(end, b.log.segmentEnd(pos))
	}
	if err := b.saveCut(repair, pos, saveEnd); err != nil { // repaircopy.go
		return fmt.Errorf("repair: could not keep a copy of the %d bytes to cut at log position %d, so the log is left as it is: %w", saveEnd-pos, pos, err)
	}
	if active > pos {
		b.opts.Logger.Error("log damaged before its last segment; later segments moved aside",
			"position", pos, "repair_dir", repair, "reason", why)
	} else {
		b.opts.Logger.Warn("torn tail cut", "position", pos, "bytes", end-pos, "reason", why)
	}
	if err := b.log.truncate(pos, repair); err != nil {
		return fmt.Errorf("repair: %w", err)
	}
	b.stats.truncated = end - pos
	return nil
}

// logReader reads batches sequentially through a large buffer.
type logReader struct {
	log        *commitLog
	end        int64
	buf        []byte
	start, lim int64 // buf holds log bytes [start, lim)
}

func newLogReader(l *commitLog, pos, end int64) *logReader {
	return &logReader{log: l, end: end, buf: make([]byte, 4<<20), start: pos, lim: pos}
}

// batch returns the bytes of the batch at pos (verified only for length).
func (r *logReader) batch(pos int64) ([]byte, error) {
	hdr, err := r.bytes(pos, batchHeaderSize)
	if err != nil {
		return nil, err
	}
	if hdr[8] == raftMagic {
		if hdr, err = r.bytes(pos, raftHeaderSize); err != nil {
			return nil, err
		}
	}
	h, err := parseBatchHeader(hdr)
	if err != nil {
		return nil, err
	}
	return r.bytes(pos, int(h.Length))
}

func (r *logReader) bytes(pos int64, n int) ([]byte, error) {
	if pos+int64(n) > r.end {
		return nil, fmt.Errorf("%w: %d bytes at %d run past the end of the log (%d)", errTorn, n, pos, r.end)
	}
	if pos >= r.start && pos+int64(n) <= r.lim {
		return r.buf[pos-r.start : pos-r.start+int64(n)], nil
	}
	if n > len(r.buf) {
		r.buf = make([]byte, n)
	}
	want := min(int64(len(r.buf)), r.end-pos)
	segEnd := r.log.segmentEnd(pos)
	if segEnd == pos {
		segEnd = r.end
	}
	if pos+want > segEnd && pos+int64(n) <= segEnd {
		want = segEnd - pos // a batch never spans segments; do not read across one needlessly
	}
	if err := r.log.readAt(r.buf[:want], pos); err != nil {
		return nil, fmt.Errorf("%w: %v", errTorn, err)
	}
	r.start, r.lim = pos, pos+want
	return r.buf[:n], nil
}
