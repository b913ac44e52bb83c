package broker

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
)

// The transaction journal lives in the commit log itself, as batches of type batchTx (so one
// fsync covers them together with ordinary produces). The first record of such a batch is a
// control record (topic id 0) whose value is one op byte followed by the transaction key
// ("TX:<id>" or an Xid's "XID:<format>:<gtrid hex>:<bqual hex>"):
//
//	prepare          the branch's messages follow, with offset -1: never indexed, never read
//	                 by consumers; the batch position is kept as the branch's prepare point
//	commit           the messages follow with their offsets and are indexed like any produce,
//	                 so a commit is one atomic batch: visible whole, or (torn) cut whole
//	rollback         control record only
//	heuristic commit as commit, and the branch stays, heuristically committed, until forgotten
//	heuristic rollback, forget   control record only
//
// Prepared branches are listed in each checkpoint with their prepare position, and restored
// from the log at open; retention keeps the log segments those positions are in. So that a
// long-prepared branch does not pin old segments forever, retention first re-writes its
// prepare batch at the head of the log (compaction), after which the old segment can go.
// Heuristically completed branches are compacted the same way (their decision, control record
// only), so that a full rebuild from the log left after retention still knows them until they
// are forgotten; a full rebuild with a readable checkpoint also keeps the heuristic branches it
// lists. Retention checkpoints after compacting and before deleting, and deletes nothing from
// the first prepare batch the checkpoint on disk lists on (when that checkpoint failed, the old
// batches stay until a later one lists the copies), so it never names a deleted position.
const (
	batchTx = 3

	txOpPrepare      byte = 1
	txOpCommit       byte = 2
	txOpRollback     byte = 3
	txOpHeurCommit   byte = 4
	txOpHeurRollback byte = 5
	txOpForget       byte = 6
	// commit with the coordinator's decision: as commit, and the batch's last record is a
	// decision record (decisions.go), so the branch's commit is the transaction's decision
	txOpCommitDecided byte = 7
)

type checkpointTx struct {
	Key   string  `json:"key"`
	State TxState `json:"state"`
	Pos   int64   `json:"prepare_position"`
}

func txControl(op byte, key string) []byte {
	return append([]byte{op}, key...)
}

// txRequest builds the batch for op over t's messages (none for a control-only batch).
func (b *Broker) txRequest(t *tx, op byte, indexed bool) *produceReq {
	b.txMu.Lock()
	msgs, topics, parts := t.msgs, t.topics, t.parts
	b.txMu.Unlock()
	control := txControl(op, t.key)
	req := &produceReq{
		topics:  topics,
		msgs:    msgs,
		parts:   parts,
		kind:    batchTx,
		control: control,
		indexed: indexed,
		sync:    true,
		size:    batchHeaderSize + recordHeaderSize + len(control),
		done:    make(chan struct{}),
	}
	if op == txOpRollback || op == txOpHeurRollback || op == txOpForget {
		req.topics, req.msgs, req.parts = nil, nil, nil
	}
	for i := range req.msgs {
		req.size += recordSize(&req.msgs[i])
	}
	return req
}

// writeOutcome writes a control-only batch for op and runs apply under txMu once it is durable.
func (b *Broker) writeOutcome(t *tx, op byte, apply func()) error {
	req := b.txRequest(t, op, false)
	req.applied = func(int64) {
		b.txMu.Lock()
		apply()
		b.txMu.Unlock()
	}
	_, err := b.submit(req)
	return err
}

// checkpointTxs lists the branches a checkpoint at pos must carry. The caller holds stateMu.
func (b *Broker) checkpointTxs(pos int64) []checkpointTx {
	b.txMu.Lock()
	defer b.txMu.Unlock()
	var out []checkpointTx
	for _, t := range b.txs {
		if !t.xa || !t.durable || t.preparePos >= pos {
			continue
		}
		state := t.state
		switch state {
		case TxHeurCommitted, TxHeurRolledBack:
		default:
			state = TxPrepared // committing or rolling back: still prepared as far as the log goes
		}
		out = append(out, checkpointTx{Key: t.key, State: state, Pos: t.preparePos})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// restoreTxs brings back the branches a checkpoint lists, reading prepared ones' messages
// from their prepare batches.
func (b *Broker) restoreTxs(cps []checkpointTx) error {
	byID := b.table.Load().byID
	for _, c := range cps {
		xid, err := ParseXid(c.Key)
		if err != nil {
			return fmt.Errorf("checkpoint names transaction %q: %w", c.Key, err)
		}
		t := &tx{key: c.Key, xa: true, xid: xid, state: c.State, preparePos: c.Pos, durable: true, created: b.opts.Now()}
		if c.State == TxPrepared {
			rd := newLogReader(b.log, c.Pos, b.log.end.Load())
			raw, err := rd.batch(c.Pos)
			if err != nil {
				return fmt.Errorf("%w: prepare batch of %s at %d: %v", errRebuild, c.Key, c.Pos, err)
			}
			bv, err := decodeBatch(raw, nil)
			if err != nil || bv.Header.Type != batchTx || len(bv.Records) == 0 || !bytes.Equal(bv.Records[0].Value, txControl(txOpPrepare, c.Key)) {
				return fmt.Errorf("%w: prepare batch of %s at %d does not match", errRebuild, c.Key, c.Pos)
			}
			if err := fillPrepared(t, bv.Records[1:], byID); err != nil {
				return err
			}
		}
		b.txs[c.Key] = t
	}
	return nil
}

func fillPrepared(t *tx, recs []record, byID map[uint32]*topic) error {
	t.msgs, t.topics, t.parts, t.bytes = nil, nil, nil, 0
	for _, r := range recs {
		tp, ok := byID[r.TopicID]
		if !ok || int(r.Partition) >= len(tp.parts) {
			return fmt.Errorf("%w: prepared %s names topic id %d partition %d", errRebuild, t.key, r.TopicID, r.Partition)
		}
		m := Message{Value: bytes.Clone(r.Value), ValueJSON: r.Attrs&attrValueJSON != 0, Headers: r.Headers, Partition: int(r.Partition)}
		if r.Attrs&attrHasKey != 0 {
			m.Key = append([]byte{}, r.Key...)
		}
		t.msgs = append(t.msgs, m)
		t.topics = append(t.topics, tp)
		t.parts = append(t.parts, int(r.Partition))
		t.bytes += r.Size
	}
	return nil
}

// replayTx applies a transaction batch found in the log during recovery.
func (b *Broker) replayTx(pos int64, bv batchView, byID map[uint32]*topic, rebuild bool) error {
	if len(bv.Records) == 0 || bv.Records[0].TopicID != 0 || len(bv.Records[0].Value) < 1 {
		return fmt.Errorf("%w: transaction batch at %d has no control record", errRebuild, pos)
	}
	ctl := bv.Records[0]
	op, key := ctl.Value[0], string(ctl.Value[1:])
	recs := bv.Records[1:]
	recPos := pos + int64(bv.Header.size()) + int64(ctl.Size)
	if op == txOpCommitDecided {
		if len(recs) == 0 {
			return fmt.Errorf("%w: decided commit batch at %d has no decision record", errRebuild, pos)
		}
		dec := recs[len(recs)-1]
		recs = recs[:len(recs)-1]
		if err := b.replayDecisions(pos, batchView{Records: []record{dec}}); err != nil {
			return err
		}
		op = txOpCommit
	}
	if op == txOpCommit || op == txOpHeurCommit {
		if _, err := b.indexReplayed(recs, recPos, byID, rebuild); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(key, "XID:") {
		// A local transaction's commit: its messages are all there is, but for the
		// transaction itself in the memory of the leader it began on (cluster mode), which the
		// applied commit finishes, also when the commit was answered outcome unknown
		// (txoutcome.go): TxStatus reports it committed, with its positions.
		if t := b.txs[key]; t != nil && op == txOpCommit && t.state == TxCommitting {
			b.finishLocked(t, TxCommitted)
			t.commitUnknown = false
			t.offsets = committedPositions(recs, byID)
		}
		return nil
	}
	xid, err := ParseXid(key)
	if err != nil {
		return fmt.Errorf("%w: transaction batch at %d: %v", errRebuild, pos, err)
	}
	t := b.txs[key]
	if t == nil {
		t = &tx{key: key, xa: true, xid: xid, created: b.opts.Now(), durable: true}
	}
	switch op {
	case txOpPrepare:
		if (t.state == TxHeurCommitted || t.state == TxHeurRolledBack) && pos <= t.preparePos {
			// A heuristic outcome the checkpoint listed (recover restores those first) at or
			// after this prepare: the prepare is older than the outcome and must not undo it
			// (a branch recovery made heuristic after its decision record was dropped keeps its
			// original prepare batch in the log).
			return nil
		}
		// Durable now, also for the leader's own branch (cluster mode), which XAPrepare marks
		// only once the proposer answers: a checkpoint in between must list it, or a restart
		// from that checkpoint (raft applies only later entries) forgets a prepared branch.
		t.state, t.preparePos, t.durable = TxPrepared, pos, true
		if err := fillPrepared(t, recs, byID); err != nil {
			return err
		}
		b.txs[key] = t
	case txOpCommit, txOpRollback, txOpForget:
		delete(b.txs, key)
	case txOpHeurCommit:
		t.state, t.msgs, t.topics, t.parts = TxHeurCommitted, nil, nil, nil
		t.preparePos = pos // the batch that carries the branch now (compaction moves it)
		b.txs[key] = t
	case txOpHeurRollback:
		t.state, t.msgs, t.topics, t.parts = TxHeurRolledBack, nil, nil, nil
		t.preparePos = pos
		b.txs[key] = t
	default:
		return fmt.Errorf("%w: transaction batch at %d has op %d", errRebuild, pos, op)
	}
	return nil
}

// committedPositions lists where the records of an applied commit were stored.
func committedPositions(recs []record, byID map[uint32]*topic) []TopicPosition {
	out := make([]TopicPosition, 0, len(recs))
	for _, r := range recs {
		if tp, ok := byID[r.TopicID]; ok {
			out = append(out, TopicPosition{Topic: tp.name, Partition: int(r.Partition), Offset: r.Offset})
		}
	}
	return out
}

// compactPrepared re-writes, at the head of the log, the batch of every branch whose batch lies
// before limit: the prepare batch (with its messages) of a prepared branch, and the decision
// (control record only) of a heuristically completed one, so that retention can delete the
// segment it was in and a full rebuild of the log that is left still finds the branch.
// It returns the lowest position still pinned (limit if none) and whether it wrote anything
// (the caller then checkpoints before deleting: the checkpoint on disk names old positions).
func (b *Broker) compactPrepared(limit int64) (pinned int64, wrote bool) {
	b.txMu.Lock()
	var old []*tx
	for _, t := range b.txs {
		if t.xa && t.durable && compactOp(t.state) != 0 && t.preparePos < limit {
			old = append(old, t)
		}
	}
	b.txMu.Unlock()
	for _, t := range old {
		b.txMu.Lock()
		state := t.state
		b.txMu.Unlock()
		op := compactOp(state)
		if op == 0 {
			continue
		}
		req := b.txRequest(t, op, false)
		if op != txOpPrepare {
			req.topics, req.msgs, req.parts = nil, nil, nil // the outcome only: its messages are indexed already
			req.size = batchHeaderSize + recordHeaderSize + len(req.control)
		}
		// Chosen above, written later: a commit, rollback, heuristic decision or forget queued
		// in between is in the log before this batch, and a PREPARE (or a heuristic outcome)
		// after it would bring the branch back after a crash. The flusher asks again, in queue
		// order, right before it encodes the batch; a decision queued after that lands after it.
		req.stale = func() bool {
			b.txMu.Lock()
			defer b.txMu.Unlock()
			return b.txs[t.key] != t || t.state != state || t.forgets > 0
		}
		req.applied = func(pos int64) {
			b.txMu.Lock()
			t.preparePos = pos
			b.txMu.Unlock()
		}
		if _, err := b.submit(req); err != nil {
			b.opts.Logger.Error("compact transaction branch", "xid", t.key, "err", err)
		} else if !req.skipped {
			wrote = true
		}
	}
	return b.preparedPin(limit), wrote
}

// preparedPin is the lowest position of a durable XA branch's batch below limit (limit when
// none): the log before it may go.
func (b *Broker) preparedPin(limit int64) int64 {
	b.txMu.Lock()
	defer b.txMu.Unlock()
	for _, t := range b.txs {
		if t.xa && t.durable {
			limit = min(limit, t.preparePos)
		}
	}
	return limit
}

// compactOp is the op that re-writes a branch in state s at the head of the log, or 0 for a
// branch compaction leaves alone (committing or rolling back: its decision is on its way).
func compactOp(s TxState) byte {
	switch s {
	case TxPrepared:
		return txOpPrepare
	case TxHeurCommitted:
		return txOpHeurCommit
	case TxHeurRolledBack:
		return txOpHeurRollback
	}
	return 0
}

func sortXids(x []Xid) {
	sort.Slice(x, func(i, j int) bool { return x[i].String() < x[j].String() })
}
