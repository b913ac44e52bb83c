package broker

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
)

// Decision records: the XA coordinator's decision log kept in the commit log (package xa,
// coordinator.decision_log: commitlog). A batch of type batchDecision holds one record per
// decision, topic id 0, offset -1 (never indexed, never read by consumers), the transaction's
// key as the record key and the coordinator's encoded record as the value; a record with an
// empty value drops the key. The broker does not interpret values: it keeps the last value per
// key (held), which is what the coordinator reads back at open.
//
// A decision batch is always fsync'd before AppendDecisions returns, whatever the fsync policy
// (like transaction records, it is a promise to every resource of the transaction), and shares
// that fsync with whatever else the flusher writes in the same round. Held decisions are rebuilt
// at recovery like indexes: each checkpoint carries the held decisions written before its
// position (their values, so that neither a restart nor retention needs their batches), and the
// log after it is replayed. So that a full rebuild from the log (an unreadable checkpoint moved
// aside) still finds them, retention re-writes held decisions whose batches lie in segments it
// is about to delete at the head of the log first, as it does for prepared XA branches.
//
// The held map is updated when the flusher encodes a decision batch, in log order, so a
// compaction batch (which takes its values at that moment) can never put an older value after
// a newer one. Until that batch is durable, the key also keeps its earlier versions: a
// checkpoint lists, for each key, the last version written before its position (the durable
// log), never one that a failed fsync or a power loss could still take away with the earlier
// copy already behind the checkpoint (a compaction re-writing an acknowledged decision, or a
// record replacing one). If that round's write or fsync fails the broker stops (fail-stop) and
// the restart rebuilds the map from the checkpoint and what is on disk after it.

const batchDecision = 5

// DecisionRecord is one record of the coordinator's decision log in the commit log.
type DecisionRecord struct {
	Key   string // the transaction it decides (a gtrid)
	Value []byte // the coordinator's record; empty: Key is dropped
}

// decisionVersion is one value a key had: the record of the batch at pos (value nil: the
// record dropped the key).
type decisionVersion struct {
	value []byte
	pos   int64
}

// heldDecision is a key's last version, in log order, and the versions before it that are
// still needed because the last is not known durable yet (ascending by position; the first
// of them is the last durable one).
type heldDecision struct {
	decisionVersion
	earlier []decisionVersion
}

// asOf returns the version of the key that the log before pos holds (ok false: none, or the
// key was dropped there).
func (h heldDecision) asOf(pos int64) (decisionVersion, bool) {
	if h.pos < pos {
		return h.decisionVersion, h.value != nil
	}
	for i := len(h.earlier) - 1; i >= 0; i-- {
		if v := h.earlier[i]; v.pos < pos {
			return v, v.value != nil
		}
	}
	return decisionVersion{}, false
}

// oldest is the lowest position whose batch holds a version still needed (ok false: only
// drops, which need no batch: a rebuild that finds neither the value nor its drop finds no key).
func (h heldDecision) oldest() (int64, bool) {
	for _, v := range h.earlier {
		if v.value != nil {
			return v.pos, true
		}
	}
	return h.pos, h.value != nil
}

// holdDecision records that the batch at pos sets key to value (nil: drops it). The caller
// holds decMu.
func (b *Broker) holdDecision(key string, value []byte, pos int64) {
	h, ok := b.decisions[key]
	if !ok {
		if value == nil {
			return
		}
		b.decisions[key] = heldDecision{decisionVersion: decisionVersion{value: value, pos: pos}}
		return
	}
	h.earlier = append(h.earlier, h.decisionVersion)
	h.decisionVersion = decisionVersion{value: value, pos: pos}
	b.decisions[key] = h
	b.decPending[key] = struct{}{}
}

// pruneDecisions forgets the versions that the durable log (everything before durable) has
// superseded, and the keys whose drop is durable. Only keys with more than one version are
// looked at (decPending), so its cost follows the keys changed since, not all held. The
// caller holds decMu.
func (b *Broker) pruneDecisions(durable int64) {
	for k := range b.decPending {
		h, ok := b.decisions[k]
		switch {
		case !ok:
			delete(b.decPending, k)
			continue
		case h.pos < durable && h.value == nil:
			delete(b.decisions, k)
			delete(b.decPending, k)
			continue
		case h.pos < durable:
			h.earlier = nil
			delete(b.decPending, k)
		default:
			i := len(h.earlier) - 1
			for i > 0 && h.earlier[i].pos >= durable {
				i--
			}
			if i <= 0 {
				continue
			}
			h.earlier = slices.Delete(h.earlier, 0, i)
		}
		b.decisions[k] = h
	}
}

type checkpointDecision struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
	Pos   int64  `json:"position"` // the batch that holds it (retention re-writes it first)
}

// maxDecisionKey bounds a decision key.
const maxDecisionKey = 256

// AppendDecisions appends recs as one batch and returns once it is fsync'd (also with fsync
// "interval" or "never"). Decision batches are not refused under back-pressure: they are small
// and each one finishes transactions. An error means the batch is not stored: the broker has
// failed or is closing (and a restart cuts what the failed round wrote), except an error
// wrapping ErrOutcomeUnknown, after which only a restart can tell.
func (b *Broker) AppendDecisions(ctx context.Context, recs []DecisionRecord) error {
	if len(recs) == 0 {
		return nil
	}
	if b.closed.Load() {
		return ErrClosed
	}
	for _, r := range recs {
		if r.Key == "" || len(r.Key) > maxDecisionKey {
			return fmt.Errorf("%w: decision key of %d bytes (1 to %d)", ErrInvalidArgument, len(r.Key), maxDecisionKey)
		}
	}
	req := &produceReq{kind: batchDecision, decisions: recs, sync: true, done: make(chan struct{}), decLimit: -1}
	req.size = decisionBatchSize(recs)
	if req.size > maxBatchBytes {
		return fmt.Errorf("%w: decision batch of %d bytes", ErrMessageTooLarge, req.size)
	}
	_, err := b.submitDecisions(req)
	return err
}

// Decisions returns the held decisions (the last value of every key not dropped), by key.
func (b *Broker) Decisions() []DecisionRecord {
	b.decMu.Lock()
	defer b.decMu.Unlock()
	out := make([]DecisionRecord, 0, len(b.decisions))
	for k, h := range b.decisions {
		if h.value != nil {
			out = append(out, DecisionRecord{Key: k, Value: bytes.Clone(h.value)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// submitDecisions queues req past the back-pressure limit and waits for it.
func (b *Broker) submitDecisions(req *produceReq) (ProduceResult, error) {
	b.qmu.Lock()
	if b.closing {
		b.qmu.Unlock()
		return ProduceResult{}, ErrClosed
	}
	if b.opts.Replicated {
		req.outc = make(chan error, 1)
	}
	b.queue = append(b.queue, req)
	b.qbytes += int64(req.size)
	b.qmu.Unlock()
	b.signal()
	if b.opts.Replicated {
		return b.waitApplied(req)
	}
	<-req.done
	return ProduceResult{}, req.err
}

func decisionMessage(r DecisionRecord) Message {
	return Message{Key: []byte(r.Key), Value: r.Value}
}

func decisionBatchSize(recs []DecisionRecord) int {
	n := batchHeaderSize
	for _, r := range recs {
		m := decisionMessage(r)
		n += recordSize(&m)
	}
	return n
}

// encodeDecisions is the flusher's part (flusher.go): it appends req's records to buf as one
// batch at log position pos and updates the held map. A compaction request (decLimit >= 0)
// takes its records now: every held decision whose batch lies before decLimit, up to
// compactChunk bytes; with none it is skipped.
func (b *Broker) encodeDecisions(buf []byte, req *produceReq, pos int64, now int64) []byte {
	hdr := len(buf)
	buf = grow(buf, batchHeaderSize)
	buf = b.appendDecisionRecords(buf, req.decisions, pos, now)
	putBatchHeader(buf[hdr:], batchHeader{Length: uint32(len(buf) - hdr), Type: batchDecision, Count: uint32(len(req.decisions)), Timestamp: now})
	return buf
}

// appendDecisionRecords appends recs as records of the batch at pos and holds them.
func (b *Broker) appendDecisionRecords(buf []byte, recs []DecisionRecord, pos int64, now int64) []byte {
	b.decMu.Lock()
	defer b.decMu.Unlock()
	for _, r := range recs {
		m := decisionMessage(r)
		buf, _ = appendRecord(buf, 0, 0, -1, now, &m)
		var v []byte
		if len(r.Value) > 0 {
			v = r.Value
		}
		b.holdDecision(r.Key, v, pos)
	}
	return buf
}

// XACommitDecided commits an idle XA branch (ended with success, never prepared) in one batch
// that also carries the coordinator's decision record dec: the branch's messages become
// visible exactly when the decision is durable (the batch is fsync'd before it returns,
// whatever the fsync policy). It is how a coordinator whose decision log is this commit log
// saves the broker branch's prepare round and commit round: the branch's commit is the
// decision. Errors are XACommit's.
func (b *Broker) XACommitDecided(ctx context.Context, xid Xid, dec DecisionRecord) ([]TopicPosition, error) {
	if dec.Key == "" || len(dec.Key) > maxDecisionKey || len(dec.Value) == 0 {
		return nil, xaErr(XAERInval, "decision record with key of %d bytes and %d value bytes", len(dec.Key), len(dec.Value))
	}
	b.txMu.Lock()
	t, err := b.xaBranch(xid)
	if err != nil {
		b.txMu.Unlock()
		return nil, err
	}
	switch t.state {
	case TxIdle:
	case TxRollbackOnly:
		b.finishLocked(t, TxRolledBack)
		b.txMu.Unlock()
		return nil, xaErr(XARBRollback, "branch %s was marked rollback-only and is rolled back", xid)
	default:
		unknown, state := t.commitUnknown, t.state
		b.txMu.Unlock()
		if unknown { // a commit of it may yet be applied (txoutcome.go)
			return nil, xaErr(XAERRMFail, "the outcome of %s's commit is not known yet; retry", xid)
		}
		return nil, xaErr(XAERProto, "a decided commit needs an idle branch; %s is %s", xid, state)
	}
	t.state = TxCommitting
	b.txMu.Unlock()
	out, err := b.commitBranchDecided(t, false, TxIdle, &dec)
	if err != nil {
		e := xaErr(XAERRMFail, "commit %s: %v", xid, err)
		e.err = err
		return nil, e
	}
	return out, nil
}

// compactChunk bounds one compaction batch of decisions.
const compactChunk = 4 << 20

// takeCompaction fills a compaction request with the held decisions before its limit (at most
// compactChunk bytes) and reports false when there are none. Flusher only, right before the
// request is encoded.
func (b *Broker) takeCompaction(req *produceReq) bool {
	b.decMu.Lock()
	defer b.decMu.Unlock()
	req.decisions = req.decisions[:0]
	size := batchHeaderSize
	for k, h := range b.decisions {
		if h.pos >= req.decLimit || h.value == nil {
			continue
		}
		r := DecisionRecord{Key: k, Value: h.value}
		m := decisionMessage(r)
		if size+recordSize(&m) > compactChunk && len(req.decisions) > 0 {
			break
		}
		size += recordSize(&m)
		req.decisions = append(req.decisions, r)
	}
	req.size = size
	return len(req.decisions) > 0
}

// compactDecisions re-writes at the head of the log every held decision whose batch lies before
// limit (limit 0: none), and returns the lowest position a held decision still pins (limit if
// none) and whether it wrote anything.
func (b *Broker) compactDecisions(limit int64) (pinned int64, wrote bool) {
	for limit > 0 {
		req := &produceReq{kind: batchDecision, sync: true, done: make(chan struct{}), decLimit: limit, size: batchHeaderSize}
		if _, err := b.submitDecisions(req); err != nil {
			b.opts.Logger.Error("compact decisions", "err", err)
			break
		}
		if req.skipped {
			break
		}
		wrote = true
	}
	return b.decisionPin(limit), wrote
}

// decisionPin is the lowest position of a batch holding a needed version of a held decision,
// below limit (limit when none): the log before it may go. A version stays needed until a
// later one is durable.
func (b *Broker) decisionPin(limit int64) int64 {
	b.stateMu.Lock()
	durable := b.syncedPos
	b.stateMu.Unlock()
	b.decMu.Lock()
	defer b.decMu.Unlock()
	b.pruneDecisions(durable)
	for _, h := range b.decisions {
		if p, ok := h.oldest(); ok {
			limit = min(limit, p)
		}
	}
	return limit
}

// checkpointDecisions lists the held decisions as the log before pos holds them; pos is
// durable (the caller holds stateMu, and pos is its syncedPos).
func (b *Broker) checkpointDecisions(pos int64) []checkpointDecision {
	b.decMu.Lock()
	defer b.decMu.Unlock()
	b.pruneDecisions(pos)
	var out []checkpointDecision
	for k, h := range b.decisions {
		if v, ok := h.asOf(pos); ok {
			out = append(out, checkpointDecision{Key: k, Value: v.value, Pos: v.pos})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// restoreDecisions brings back the decisions a checkpoint lists.
func (b *Broker) restoreDecisions(cps []checkpointDecision) error {
	b.decMu.Lock()
	defer b.decMu.Unlock()
	for _, c := range cps {
		if c.Key == "" || len(c.Value) == 0 {
			return fmt.Errorf("checkpoint holds a decision with key %q and %d value bytes", c.Key, len(c.Value))
		}
		b.decisions[c.Key] = heldDecision{decisionVersion: decisionVersion{value: c.Value, pos: c.Pos}}
	}
	return nil
}

// replayDecisions applies a decision batch found in the log during recovery.
func (b *Broker) replayDecisions(pos int64, bv batchView) error {
	b.decMu.Lock()
	defer b.decMu.Unlock()
	for _, r := range bv.Records {
		if r.TopicID != 0 || len(r.Key) == 0 {
			return fmt.Errorf("%w: decision batch at %d holds a record of topic id %d, key of %d bytes", errRebuild, pos, r.TopicID, len(r.Key))
		}
		var v []byte
		if len(r.Value) > 0 {
			v = bytes.Clone(r.Value)
		}
		b.holdDecision(string(r.Key), v, pos)
	}
	return nil
}
