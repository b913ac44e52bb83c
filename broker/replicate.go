package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// A replicated broker (Options.Replicated, cluster mode) changes state only when raft applies
// a committed entry:
//
//   - Writes are proposed, not written. The proposer goroutine (it replaces the flusher) takes
//     every queued produce request, encodes each as one batch with the offsets it will have,
//     and hands the group to raft in one step through the Proposer. Offsets come from the
//     applied state plus this leader's own proposals not yet applied; that state is reset
//     whenever the term changes. A new leader serves (Proposer.Serving) only after it applied an
//     entry of its own term, so every entry of an earlier term is applied by then and nobody
//     else proposes in its term: the offsets it assigns are exactly the ones apply will find.
//   - ApplyEntry is the one place state changes, on every node alike: it indexes the batch's
//     records (verifying that each offset is the partition's next: a mismatch stops the node
//     loudly), remembers its idempotency key, creates topics, and publishes. An uncommitted
//     suffix that a new leader truncates was never applied, so nothing is ever undone.
//   - Topics are log records (batch type 6): their ids are assigned by the leader and checked
//     at apply; topics.json is derived from the applied log.
//   - After a restart the broker holds the state of its last checkpoint, which records the
//     raft index it covers (AppliedIndex); raft delivers the committed entries after it again.
//
// Transactions replicate the same way: their batches (prepare, commit, rollback, heuristic
// outcomes, forget, decided commits, decision records) are proposed like produces and applied
// on every node by the code that replays them at recovery (replayTx, replayDecisions), so a
// new leader knows every prepared branch and every decision. A branch's state before its
// prepare lives only in the leader's memory and is lost on failover, which XA allows
// (XAER_NOTA, XA_RB*). On the leader, a request's own completion step (produceReq.applied)
// runs once its entry is applied, as a single node runs it once its batch is durable.
//
// Retention is a replicated decision too (retention_repl.go): the leader proposes the new
// start offsets, every member applies them and deletes its own index files after a
// checkpoint. Not replicated: decision compaction, which only retention asks for; retention
// does not delete a replicated log's segments yet (a follower that needed them could not
// catch up).

// Proposer hands encoded batches to raft; the replica package implements it.
type Proposer interface {
	// Serving returns the current term and whether this node is the leader and has applied an
	// entry of that term.
	Serving() (term uint64, ok bool)
	// Propose appends entries to raft's log in one step, if this node is still the serving
	// leader of term. Then outcomes[i] receives entry i's outcome, once: nil once it is applied
	// on this node (ApplyEntry returned), or an error wrapping ErrOutcomeUnknown. Each channel
	// must have room for it (buffered): the sender never waits. A non-nil error means nothing
	// was proposed and nothing is sent on outcomes: ErrNotLeader, or ErrBackpressure when raft
	// refused the entries. The caller owns the channels, so that a writer waits on one channel
	// for its whole answer (produceReq.outc) and is woken once.
	Propose(term uint64, entries [][]byte, outcomes []chan<- error) error
}

// replState is what a replicated broker keeps besides a single node's state.
type replState struct {
	proposer atomic.Pointer[proposerBox] // set once, by the first SetProposer

	// Proposer goroutine only.
	nextTerm uint64
	next     map[*partition]int64 // offsets proposed in nextTerm, not yet applied

	// inflight maps a proposed entry's data (its first byte) to its request, so that applying
	// the entry on the leader can tell the request its log position.
	imu      sync.Mutex
	inflight map[*byte]*produceReq

	// unknown holds the transactions whose commit was answered outcome unknown and that no
	// applied entry has settled yet (txoutcome.go). Guarded by stateMu.
	unknown map[*tx]struct{}
}

// SetProposer gives a replicated broker its way into raft. Writes fail with ErrNotLeader until
// it is called.
func (b *Broker) SetProposer(p Proposer) {
	b.repl.proposer.CompareAndSwap(nil, &proposerBox{p})
}

// proposerBox holds a Proposer, so that it fits an atomic.Pointer.
type proposerBox struct{ p Proposer }

// currentProposer returns the proposer SetProposer gave, or nil; safe for any number of
// concurrent callers.
func (b *Broker) currentProposer() Proposer {
	if box := b.repl.proposer.Load(); box != nil {
		return box.p
	}
	return nil
}

// AppliedIndex is the last raft index this broker's state includes.
func (b *Broker) AppliedIndex() uint64 {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	return b.raftApplied
}

// runProposer is the replicated broker's writer loop: it proposes what Produce queued.
func (b *Broker) runProposer() {
	defer close(b.flusherDone)
	for {
		reqs, closing := b.take(nil)
		if len(reqs) > 0 {
			b.proposeGroup(reqs)
		}
		if closing && len(reqs) == 0 {
			return
		}
	}
}

// proposeGroup encodes reqs (one batch each) and proposes them as one raft step.
func (b *Broker) proposeGroup(reqs []*produceReq) {
	finish := func(err error) {
		for _, r := range reqs {
			r.err = err
			r.outc <- err
		}
	}
	b.stateMu.Lock()
	failed := b.failed
	b.stateMu.Unlock()
	if failed != nil {
		finish(failed)
		return
	}
	pr := b.currentProposer()
	if pr == nil {
		finish(ErrNotLeader)
		return
	}
	term, ok := pr.Serving()
	if !ok {
		finish(ErrNotLeader)
		return
	}
	if term != b.repl.nextTerm {
		b.repl.nextTerm = term
		b.repl.next = make(map[*partition]int64)
	}
	saved := make(map[*partition]int64)
	next := func(p *partition) int64 {
		off, ok := b.repl.next[p]
		if !ok {
			b.stateMu.Lock()
			off = p.next
			b.stateMu.Unlock()
		}
		if _, ok := saved[p]; !ok {
			saved[p] = off
		}
		b.repl.next[p] = off + 1
		return off
	}
	now := b.opts.Now().UnixMilli()
	entries := make([][]byte, 0, len(reqs))
	live := reqs[:0:0]
	for _, r := range reqs {
		if r.stale != nil && r.stale() {
			r.skipped = true
			r.outc <- nil
			continue
		}
		entries = append(entries, b.encodeReplicated(r, now, next))
		live = append(live, r)
	}
	reqs = live
	if len(reqs) == 0 {
		return
	}
	// Everything the writer reads once its outcome arrives is set before proposing: the
	// outcome may be sent (by raft's loop) before Propose returns here.
	proposed := time.Now()
	outcomes := make([]chan<- error, len(reqs))
	b.repl.imu.Lock()
	for i, r := range reqs {
		b.repl.inflight[&entries[i][0]] = r
		r.entry = &entries[i][0]
		r.term = term
		r.proposedAt = proposed
		outcomes[i] = r.outc
	}
	b.repl.imu.Unlock()
	if err := pr.Propose(term, entries, outcomes); err != nil {
		b.repl.imu.Lock()
		for i := range reqs {
			delete(b.repl.inflight, &entries[i][0])
		}
		b.repl.imu.Unlock()
		// Nothing was proposed: undo this group's offsets. The offsets proposed before it in this
		// term stay: a refusal in the same term (a leadership transfer under way) leaves them
		// in the log, and a new term resets everything anyway.
		for p, off := range saved {
			b.repl.next[p] = off
		}
		finish(err)
	}
}

// encodeReplicated encodes r as one magic-2 batch (raft term and index zero: raft assigns
// them) whose records carry the offsets next gives.
func (b *Broker) encodeReplicated(r *produceReq, now int64, next func(*partition) int64) []byte {
	buf := make([]byte, raftHeaderSize, r.size-batchHeaderSize+raftHeaderSize)
	count := 0
	if r.kind == batchDecision {
		for _, d := range r.decisions {
			m := decisionMessage(d)
			buf, _ = appendRecord(buf, 0, 0, -1, now, &m)
		}
		putBatchHeader(buf, batchHeader{Magic: raftMagic, Length: uint32(len(buf)), Type: batchDecision, Count: uint32(len(r.decisions)), Timestamp: now})
		return buf
	}
	if r.control != nil {
		buf, _ = appendRecord(buf, 0, 0, 0, now, &Message{Value: r.control})
		count++
	}
	r.offsets = make([]Position, len(r.msgs))
	for i := range r.msgs {
		t := r.topicOf(i)
		p := t.parts[r.parts[i]]
		off := int64(-1)
		if r.indexed {
			off = next(p)
		}
		buf, _ = appendRecord(buf, t.id, uint32(p.id), off, now, &r.msgs[i])
		r.offsets[i] = Position{Partition: p.id, Offset: off}
	}
	count += len(r.msgs)
	for _, d := range r.decisions { // a commit that carries the coordinator's decision
		m := decisionMessage(d)
		buf, _ = appendRecord(buf, 0, 0, -1, now, &m)
		count++
	}
	h := batchHeader{Magic: raftMagic, Length: uint32(len(buf)), Type: r.kind, Count: uint32(count), Timestamp: now}
	if r.hasKey {
		h.Flags |= batchFlagKey
		h.Key = r.key
		h.Fingerprint = r.fp
	}
	putBatchHeader(buf, h)
	return buf
}

// waitApplied waits for a proposed request's entry to be applied, then runs the request's own
// completion step (as settle does on a single node).
func (b *Broker) waitApplied(req *produceReq) (ProduceResult, error) {
	err := <-req.outc
	if req.err != nil || req.skipped { // refused before proposing, or dropped unwritten
		return ProduceResult{}, req.err
	}
	b.repl.imu.Lock()
	delete(b.repl.inflight, req.entry)
	b.repl.imu.Unlock()
	if err != nil {
		// Proposed, then leadership was lost or the node stopped: it may still commit.
		return ProduceResult{}, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	}
	if po, ok := b.opts.Observer.(ProposalObserver); ok {
		po.Proposed(time.Since(req.proposedAt))
	}
	if req.applied != nil {
		b.stateMu.Lock()
		req.applied(req.batchPos)
		b.stateMu.Unlock()
	}
	if req.kind == batchMessages {
		b.stats.messagesIn.Add(int64(len(req.msgs)))
	}
	return ProduceResult{Offsets: req.offsets}, nil
}

// ApplyEntry applies the committed raft entry index (of term) whose data is data: the replica's
// Ready loop calls it for every committed entry, in order, after the entry is durable in this
// node's log. An error means this node's state and the log disagree, or the entry is applied in
// part (a file it needed could not be written): the node must stop, and the broker fails with
// it (Err, Failed; every later write is refused) until a restart applies the entry again from
// the log.
func (b *Broker) ApplyEntry(index, term uint64, data []byte) error {
	err := b.applyEntry(index, term, data)
	if err != nil {
		b.FailApply(err)
	}
	return err
}

// FailApply fails the broker because a committed raft entry could not be applied outside
// ApplyEntry, err saying which and why: a membership change whose record (the members file, the
// raft state) could not be written, which stops the raft node before the broker is told of the
// entry. The result is that of an ApplyEntry error (Err names the entry, Failed is closed,
// every later write is refused with ErrStorage): the node is stopped, and what the process
// holds in memory may include a change its disk lacks, until a restart applies the entry again
// from the log. A broker that failed already keeps its first error.
func (b *Broker) FailApply(err error) {
	b.failReplica(err, "applying a committed raft entry failed; refusing writes until restart")
}

// FailStopped fails the broker because the raft node that replicates its log stopped on err
// for another reason than an entry it could not apply: the entries or the raft state (term,
// vote) of a round could not be saved, the log could not be read back, a proposal was not the
// entry raft wrote at its index, a snapshot could not be staged. The node takes no part in the
// cluster any more, so nothing this broker holds moves again until a restart, and it must not
// look healthy to a program that embeds it (or to a health check that asks it): Err says why
// the node stopped, Failed is closed, every later write is refused with ErrStorage. A broker
// that failed already (the log's own write or fsync failed first, as for a failed save of
// entries) keeps its first error.
//
// A node stopped by its owner (Stop) or to install a snapshot it staged is not failed: the
// first is no fault, and after the second the process restarts at once to install the
// snapshot.
func (b *Broker) FailStopped(err error) {
	b.failReplica(fmt.Errorf("raft node stopped: %w", err), "the raft node stopped; refusing writes until restart")
}

// failReplica is FailApply's and FailStopped's: the broker fails with err, logged as msg when
// it is the first failure.
func (b *Broker) failReplica(err error, msg string) {
	b.stateMu.Lock()
	first := b.failed == nil
	b.setFailedLocked(fmt.Errorf("%w: %w, restart required: %v", ErrClosed, ErrStorage, err))
	b.stateMu.Unlock()
	if first {
		b.opts.Logger.Error(msg, "err", err)
	}
}

func (b *Broker) applyEntry(index, term uint64, data []byte) error {
	loc, ok := b.rlog.loc(index)
	if !ok || loc.term != term {
		return fmt.Errorf("apply raft entry %d term %d: not in this node's log (it ends at %d)", index, term, b.rlog.LastIndex())
	}
	var touched []*partition
	marked := false // the applied index moved in the same critical section as the indexes
	if len(data) > 0 {
		bv, err := decodeBatch(data, nil)
		if err != nil {
			return fmt.Errorf("apply raft entry %d: %w", index, err)
		}
		if len(data) > 0 {
			b.repl.imu.Lock()
			if r := b.repl.inflight[&data[0]]; r != nil {
				r.batchPos = loc.pos
			}
			b.repl.imu.Unlock()
		}
		switch bv.Header.Type {
		case batchTopic:
			if err := b.applyTopic(index, bv); err != nil {
				return err
			}
		case batchMessages, batchTx, batchDecision, batchRetention:
			byID := b.table.Load().byID
			b.stateMu.Lock()
			var err error
			switch bv.Header.Type {
			case batchTx:
				b.txMu.Lock()
				err = b.replayTx(loc.pos, bv, byID, false)
				b.txMu.Unlock()
			case batchDecision:
				err = b.replayDecisions(loc.pos, bv)
			case batchRetention:
				err = b.applyRetention(index, bv, byID)
				if err == nil && b.ckptStale {
					select { // the index files go once a checkpoint records the new starts
					case b.ckptSig <- struct{}{}:
					default:
					}
				}
			default:
				err = b.applyReplayed(loc.pos, bv, byID, false, true)
			}
			if err == nil {
				for _, r := range bv.Records {
					t, ok := byID[r.TopicID]
					if !ok || r.Offset < 0 || int(r.Partition) >= len(t.parts) {
						continue // a control or decision record, or a prepared message
					}
					p := t.parts[r.Partition]
					if p.written != p.next {
						p.written, p.synced = p.next, p.next
						touched = append(touched, p)
					}
				}
				// In the same critical section: a checkpoint between the two would record
				// these records under a raft index without this entry, and a restart would
				// apply it again.
				b.markAppliedLocked(index, term, loc)
				marked = true
			}
			b.stateMu.Unlock()
			if err != nil {
				return fmt.Errorf("apply raft entry %d term %d: %w", index, term, err)
			}
		default:
			return fmt.Errorf("apply raft entry %d: batch type %d is not replicated", index, bv.Header.Type)
		}
	}
	if !marked {
		b.stateMu.Lock()
		b.markAppliedLocked(index, term, loc)
		b.stateMu.Unlock()
	}
	for _, p := range touched {
		p.publish(p.written)
	}
	if b.appliedPos-b.lastCkptPos.Load() >= b.opts.CheckpointBytes {
		select {
		case b.ckptSig <- struct{}{}:
		default:
		}
	}
	return nil
}

// markAppliedLocked records entry index (of term, at loc) as applied and, since applied entries
// are on this node's disk, as covered by the next checkpoint. The caller holds stateMu.
func (b *Broker) markAppliedLocked(index, term uint64, loc raftLoc) {
	b.raftApplied, b.raftAppliedTerm = index, term
	b.appliedPos = loc.pos + int64(loc.size)
	b.syncedPos, b.syncedDedupe, b.syncedRaft = b.appliedPos, b.dedupe.Mark(), index
	b.settleUnknownLocked(term)
}

// createTopicReplicated proposes a topic and waits until it is applied.
func (b *Broker) createTopicReplicated(name string, cfg TopicConfig) (bool, error) {
	b.topicProposeMu.Lock()
	defer b.topicProposeMu.Unlock()
	if b.closed.Load() {
		return false, ErrClosed
	}
	pr := b.currentProposer()
	if pr == nil {
		return false, ErrNotLeader
	}
	term, ok := pr.Serving()
	if !ok {
		return false, ErrNotLeader
	}
	if t, ok := b.topicsByName()[name]; ok {
		return false, t.existsAs(cfg)
	}
	b.topicMu.Lock()
	id := b.nextTopicID
	b.topicMu.Unlock()
	m := topicMeta{
		ID:             id,
		Name:           name,
		Partitions:     cfg.Partitions,
		RetentionMs:    cfg.RetentionAge.Milliseconds(),
		RetentionBytes: cfg.RetentionBytes,
		CreatedAt:      b.opts.Now().UTC().Format(time.RFC3339),
	}
	val, err := json.Marshal(m)
	if err != nil {
		return false, err
	}
	now := b.opts.Now().UnixMilli()
	buf := make([]byte, raftHeaderSize)
	buf, _ = appendRecord(buf, 0, 0, 0, now, &Message{Value: val, ValueJSON: true})
	putBatchHeader(buf, batchHeader{Magic: raftMagic, Length: uint32(len(buf)), Type: batchTopic, Count: 1, Timestamp: now})
	out := make(chan error, 1)
	if err := pr.Propose(term, [][]byte{buf}, []chan<- error{out}); err != nil {
		return false, err
	}
	if err := <-out; err != nil {
		return false, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	}
	t, ok := b.topicsByName()[name]
	switch {
	case ok && t.id == id:
		return true, nil
	case ok:
		return false, t.existsAs(cfg)
	}
	return false, fmt.Errorf("%w: topic %q was not created; retry", ErrOutcomeUnknown, name)
}

// applyTopic creates the topic a committed topic record defines. A record that names an
// existing topic, or an id other than the next one, changes nothing, on every node alike
// (two proposals raced; createTopicReplicated tells its caller what happened).
func (b *Broker) applyTopic(index uint64, bv batchView) error {
	if len(bv.Records) != 1 {
		return fmt.Errorf("apply raft entry %d: topic batch with %d records", index, len(bv.Records))
	}
	var m topicMeta
	if err := json.Unmarshal(bv.Records[0].Value, &m); err != nil {
		return fmt.Errorf("apply raft entry %d: topic record: %w", index, err)
	}
	b.topicMu.Lock()
	defer b.topicMu.Unlock()
	if _, ok := b.topicsByName()[m.Name]; ok || m.ID != b.nextTopicID {
		return nil
	}
	if !ValidName(m.Name) || m.Partitions < 1 || m.Partitions > maxPartitions {
		return fmt.Errorf("apply raft entry %d: topic record %q with %d partitions is invalid", index, m.Name, m.Partitions)
	}
	metas := append(append(make([]topicMeta, 0, len(b.metas)+1), b.metas...), m)
	if err := saveTopics(b.opts.Dir, metas); err != nil {
		return fmt.Errorf("apply raft entry %d: create topic %q: %w", index, m.Name, err)
	}
	b.metas = metas
	b.nextTopicID++
	b.addTopic(b.newTopic(m))
	b.opts.Logger.Info("topic created", "topic", m.Name, "partitions", m.Partitions, "raft_index", index)
	return nil
}

// recoverReplicated opens a replicated broker's state: the partition indexes as of the last
// checkpoint (which names the raft index it covers) and the raft index of every entry in the
// log. Entries after the checkpoint are not applied here: only raft knows which of them are
// committed, and it delivers those again (ApplyEntry). Every batch must be a replicated one
// with consecutive raft indexes; a torn tail is cut, corruption below it refuses the start
// (verify.go), as on a single node: such a node must not vote or lead.
func (b *Broker) recoverReplicated(cp *checkpointFile) error {
	b.rlog = &RaftLog{b: b}
	comp, err := loadRaftCompaction(b.opts.Dir)
	if err != nil {
		return fmt.Errorf("open replicated broker: %w", err)
	}
	b.rlog.compIndex, b.rlog.compTerm = comp.Index, comp.Term
	if comp.Index > 0 && (cp == nil || cp.RaftIndex < comp.Index) {
		return fmt.Errorf("open replicated broker: the raft log is compacted through entry %d and no checkpoint covers it: this node cannot rebuild its state; replace it under a new node id (docs/cluster.md)", comp.Index)
	}
	if cp != nil {
		err := b.loadIndexes(cp)
		if err != nil && !errors.Is(err, errRebuild) {
			return err
		}
		if err != nil && comp.Index > 0 {
			return fmt.Errorf("open replicated broker: %w, and the raft log is compacted through entry %d, so the indexes cannot be rebuilt from it: replace this node under a new node id (docs/cluster.md)", err, comp.Index)
		}
		if err != nil {
			b.opts.Logger.Warn("rebuilding every index from the committed raft entries", "reason", err)
			cp = nil
		}
	}
	if cp != nil {
		// Raft re-delivers only the entries after the checkpoint: the branches and decisions
		// of the entries before it come from the checkpoint, as on a single node.
		if err := b.restoreTxs(cp.Txs); err != nil {
			return err
		}
		if err := b.restoreDecisions(cp.Decisions); err != nil {
			return err
		}
	}
	if cp == nil {
		if err := b.resetIndexes(); err != nil {
			return err
		}
	}
	from := b.log.start()
	pos, end := from, b.log.end.Load()
	rd := newLogReader(b.log, pos, end)
	var (
		recs []record
		cut  error
		locs []raftLoc
		// Entries at or below the compaction point are still on disk when a crash came
		// between writing raft-compacted and deleting their segments: they are passed over
		// and their segments deleted below.
		stale     uint64
		staleUpTo = from
	)
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
		h := bv.Header
		b.found = max(b.found, h.Timestamp) // clock.go
		if h.Magic != raftMagic {
			return fmt.Errorf("open replicated broker: log position %d holds a batch written outside cluster mode: this data directory was not a cluster member's", pos)
		}
		if len(locs) == 0 && h.RaftIndex <= comp.Index {
			if stale > 0 && h.RaftIndex != stale+1 {
				return fmt.Errorf("%w: log position %d holds raft entry %d, expected %d", ErrCorrupt, pos, h.RaftIndex, stale+1)
			}
			stale = h.RaftIndex
			pos += int64(h.Length)
			staleUpTo = pos
			continue
		}
		if want := comp.Index + uint64(len(locs)) + 1; h.RaftIndex != want {
			return fmt.Errorf("%w: log position %d holds raft entry %d, expected %d", ErrCorrupt, pos, h.RaftIndex, want)
		}
		locs = append(locs, raftLoc{pos: pos, size: h.Length, term: h.RaftTerm})
		pos += int64(h.Length)
	}
	if cut != nil {
		if err := b.checkTail(pos, end, cut); err != nil {
			return err
		}
		if err := b.cutTail(pos, end, cut); err != nil {
			return err
		}
	}
	if stale > 0 {
		if stale != comp.Index {
			return fmt.Errorf("%w: the log's entries below the compaction point %d end at %d", ErrCorrupt, comp.Index, stale)
		}
		if _, err := b.log.deleteBefore(staleUpTo); err != nil {
			return fmt.Errorf("open replicated broker: delete compacted segments: %w", err)
		}
		b.opts.Logger.Info("deleted log segments a compaction left behind", "through_index", comp.Index)
	}
	b.rlog.locs = locs
	applied, appliedPos := uint64(0), int64(0)
	if cp != nil {
		applied, appliedPos = cp.RaftIndex, cp.Position
	}
	last := comp.Index + uint64(len(locs))
	if applied > last {
		return fmt.Errorf("open replicated broker: the checkpoint covers raft entries up to %d but the log holds %d: entries this node applied are gone; replace the node under a new id", applied, last)
	}
	if applied > comp.Index {
		if l := locs[applied-comp.Index-1]; l.pos+int64(l.size) != appliedPos {
			return fmt.Errorf("open replicated broker: the checkpoint puts raft entry %d's end at %d, the log at %d", applied, appliedPos, l.pos+int64(l.size))
		}
	} else if comp.Index > 0 && appliedPos != staleUpTo {
		return fmt.Errorf("open replicated broker: the checkpoint puts the compaction point %d's end at %d, the log at %d", applied, appliedPos, staleUpTo)
	}
	if err := b.syncReplayed(appliedPos); err != nil {
		return err
	}
	for _, t := range b.table.Load().byID {
		for _, p := range t.parts {
			p.written = p.next
			p.publish(p.next)
		}
	}
	b.appliedPos = appliedPos
	b.raftApplied, b.syncedRaft = applied, applied
	if applied > comp.Index {
		b.raftAppliedTerm = locs[applied-comp.Index-1].term
	} else if applied > 0 {
		b.raftAppliedTerm = comp.Term
	}
	b.stats.recovered = end - appliedPos
	return nil
}

// Dir is the broker's data directory.
func (b *Broker) Dir() string { return b.opts.Dir }
