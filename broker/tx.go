package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Transactions. A transaction collects messages for any topics and makes them visible all at
// once when it commits: the commit is one batch in the commit log (atomic across a crash, like
// any produce), so readers see all of its messages at consecutive offsets per partition, or
// none. Until then the messages live in memory (active, idle) or, once prepared, in a prepare
// batch in the log that readers never index (txlog.go). A rollback discards them.
//
// Local transactions (/v1/transactions) are open → committed | rolled_back | timed_out.
// XA branches follow javax.transaction.xa.XAResource: start(noflags|join|resume) makes a
// branch active; end(success) idle, end(suspend) suspended, end(fail) rollback-only;
// prepare votes ok (prepared, durable) or rdonly (no messages: forgotten at once); commit
// two-phase from prepared or one-phase from idle; rollback from idle, suspended,
// rollback-only or prepared; heuristic decisions by an operator on prepared branches, which
// then answer XA_HEURCOM / XA_HEURRB until forgotten. A branch that is not prepared rolls back
// at its timeout; a prepared branch never times out.

// Errors of local transactions.
var (
	ErrTxNotFound = errors.New("unknown transaction")
	ErrTxTimedOut = errors.New("transaction timed out and was rolled back")
	ErrTxState    = errors.New("transaction is not open")
)

// TxState is a transaction's or branch's state.
type TxState string

// Transaction states. Local transactions use open, committed, rolled_back and timed_out.
const (
	TxOpen              TxState = "open" // XA: active
	TxIdle              TxState = "idle"
	TxSuspended         TxState = "suspended"
	TxRollbackOnly      TxState = "rollback_only"
	TxPreparing         TxState = "preparing"
	TxPrepared          TxState = "prepared"
	TxCommitting        TxState = "committing"
	TxCommitted         TxState = "committed"
	TxRollingBack       TxState = "rolling_back"
	TxRolledBack        TxState = "rolled_back"
	TxTimedOut          TxState = "timed_out"
	TxHeurCommitted     TxState = "heuristically_committed"
	TxHeurRolledBack    TxState = "heuristically_rolled_back"
	defaultTxTimeout            = 30 * time.Second
	maxTxTimeout                = time.Hour
	finishedTxRetention         = time.Hour
)

// XA flags of start and end.
const (
	XANoFlags = "noflags"
	XAJoin    = "join"
	XAResume  = "resume"
	XASuccess = "success"
	XAFail    = "fail"
	XASuspend = "suspend"
)

// TxMessage is a message of a transaction: any topic.
type TxMessage struct {
	Topic string
	Message
}

// TopicPosition is where a committed transaction's message was stored.
type TopicPosition struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
}

// TxInfo describes a transaction or branch.
type TxInfo struct {
	ID       string
	State    TxState
	Messages int
	Created  time.Time
	Offsets  []TopicPosition // once committed
}

type tx struct {
	key      string // "TX:<id>" or the Xid's txkey
	xa       bool
	xid      Xid
	state    TxState
	msgs     []Message
	topics   []*topic
	parts    []int
	bytes    int
	created  time.Time
	deadline time.Time // zero: none (prepared branches)
	// durable is set once the prepare batch is in the log; preparePos is its position.
	durable    bool
	preparePos int64
	// prepareUnknown: the prepare was answered ErrOutcomeUnknown while the branch was still
	// preparing; its batch may yet be in the log (or its entry applied), so the branch stays
	// until a rollback is written (XARollback) or the applied prepare makes it prepared.
	prepareUnknown bool
	// commitUnknown (cluster mode): the commit of a transaction only this node's memory holds
	// (local, or XA one-phase) was answered ErrOutcomeUnknown; it stays committing until an
	// applied entry settles it: its own (committed), or one of a term after unknownTerm, the
	// term it was proposed in (lost: back to unknownPrev). See txoutcome.go.
	commitUnknown bool
	unknownTerm   uint64
	unknownPrev   TxState
	offsets       []TopicPosition
	finished      time.Time
	// forgets counts forgets queued for the branch (an XA forget leaves its state alone until
	// the forget is durable): compaction's staleness check sees it (txlog.go).
	forgets int
}

func localKey(id string) string { return "TX:" + id }

// BeginTx opens a local transaction. timeout 0 means 30s; at most 1h.
func (b *Broker) BeginTx(timeout time.Duration) (string, error) {
	if b.closed.Load() {
		return "", ErrClosed
	}
	timeout, err := txTimeout(timeout)
	if err != nil {
		return "", err
	}
	var raw [12]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("transaction id: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	now := b.opts.Now()
	b.txMu.Lock()
	b.txs[localKey(id)] = &tx{key: localKey(id), state: TxOpen, created: now, deadline: now.Add(timeout)}
	b.txMu.Unlock()
	return id, nil
}

func txTimeout(d time.Duration) (time.Duration, error) {
	switch {
	case d == 0:
		return defaultTxTimeout, nil
	case d < 0 || d > maxTxTimeout:
		return 0, fmt.Errorf("%w: timeout must be between 1ms and %s", ErrInvalidArgument, maxTxTimeout)
	}
	return d, nil
}

// localTx finds an open local transaction, applying its timeout.
func (b *Broker) localTx(id string) (*tx, error) {
	t, ok := b.txs[localKey(id)]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrTxNotFound, id)
	}
	b.expireLocked(t, b.opts.Now())
	switch t.state {
	case TxOpen:
		return t, nil
	case TxTimedOut:
		return nil, fmt.Errorf("%w: %q", ErrTxTimedOut, id)
	}
	return nil, fmt.Errorf("%w: %q is %s", ErrTxState, id, t.state)
}

// AddTx adds messages to an open local transaction.
func (b *Broker) AddTx(id string, msgs []TxMessage) error {
	b.txMu.Lock()
	defer b.txMu.Unlock()
	t, err := b.localTx(id)
	if err != nil {
		return err
	}
	return b.addMessages(t, msgs)
}

// CommitTx commits a local transaction: all its messages become visible at once.
func (b *Broker) CommitTx(ctx context.Context, id string) ([]TopicPosition, error) {
	b.txMu.Lock()
	t, err := b.localTx(id)
	if err != nil {
		b.txMu.Unlock()
		return nil, err
	}
	t.state = TxCommitting
	b.txMu.Unlock()
	return b.commitBranch(t, false, TxOpen)
}

// RollbackTx discards an open local transaction.
func (b *Broker) RollbackTx(ctx context.Context, id string) error {
	b.txMu.Lock()
	defer b.txMu.Unlock()
	t, err := b.localTx(id)
	if err != nil {
		return err
	}
	b.finishLocked(t, TxRolledBack)
	return nil
}

// TxStatus describes a local transaction. Finished ones are remembered for an hour (in
// memory: after a restart an unknown id is reported as not found).
func (b *Broker) TxStatus(id string) (TxInfo, error) {
	b.txMu.Lock()
	defer b.txMu.Unlock()
	t, ok := b.txs[localKey(id)]
	if !ok {
		return TxInfo{}, fmt.Errorf("%w: %q", ErrTxNotFound, id)
	}
	b.expireLocked(t, b.opts.Now())
	state := t.state
	if state == TxCommitting {
		state = TxOpen
	}
	return TxInfo{ID: id, State: state, Messages: len(t.msgs), Created: t.created, Offsets: t.offsets}, nil
}

// addMessages validates msgs and appends copies of them to t. The caller holds txMu.
func (b *Broker) addMessages(t *tx, msgs []TxMessage) error {
	if len(msgs) == 0 {
		return fmt.Errorf("%w: no messages", ErrInvalidArgument)
	}
	size := t.bytes
	topics := make([]*topic, len(msgs))
	parts := make([]int, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		tp, err := b.lookup(m.Topic)
		if err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		rs, err := b.checkMessage(i, &m.Message)
		if err != nil {
			return err
		}
		p, err := choosePartition(tp, &m.Message, i)
		if err != nil {
			return err
		}
		topics[i], parts[i] = tp, p
		size += rs
	}
	if size > b.opts.MaxFlushBytes {
		return fmt.Errorf("%w: a transaction may hold %d bytes of messages", ErrMessageTooLarge, b.opts.MaxFlushBytes)
	}
	for i := range msgs {
		t.msgs = append(t.msgs, cloneMessage(msgs[i].Message))
	}
	t.topics = append(t.topics, topics...)
	t.parts = append(t.parts, parts...)
	t.bytes = size
	return nil
}

func choosePartition(t *topic, m *Message, i int) (int, error) {
	switch {
	case m.Partition == -1 && m.Key != nil:
		return PartitionForKey(m.Key, len(t.parts)), nil
	case m.Partition == -1:
		return int((t.rr.Add(1) - 1) % uint32(len(t.parts))), nil
	case m.Partition < 0 || m.Partition >= len(t.parts):
		return 0, fmt.Errorf("%w: message %d names partition %d; topic %q has partitions 0..%d",
			ErrUnknownPartition, i, m.Partition, t.name, len(t.parts)-1)
	}
	return m.Partition, nil
}

func cloneMessage(m Message) Message {
	c := Message{Value: append([]byte(nil), m.Value...), ValueJSON: m.ValueJSON, Partition: m.Partition}
	if m.Key != nil {
		c.Key = append([]byte{}, m.Key...)
	}
	if len(m.Headers) > 0 {
		c.Headers = append([]Header(nil), m.Headers...)
	}
	return c
}

// expireLocked applies t's timeout. The caller holds txMu.
func (b *Broker) expireLocked(t *tx, now time.Time) {
	if t.deadline.IsZero() || now.Before(t.deadline) {
		return
	}
	switch t.state {
	case TxOpen, TxIdle, TxSuspended, TxRollbackOnly:
		b.opts.Logger.Info("transaction timed out; rolled back", "tx", t.key, "messages", len(t.msgs))
		b.finishLocked(t, TxTimedOut)
	}
}

// finishLocked ends t. XA branches are forgotten (a later verb gets XAER_NOTA); local
// transactions are kept for TxStatus for a while. The caller holds txMu.
func (b *Broker) finishLocked(t *tx, state TxState) {
	t.state = state
	t.msgs, t.topics, t.parts = nil, nil, nil
	t.finished = b.opts.Now()
	if t.xa && state != TxTimedOut {
		delete(b.txs, t.key)
	}
}

// sweepTxs rolls back transactions past their timeout and drops old finished ones.
func (b *Broker) sweepTxs() {
	now := b.opts.Now()
	b.txMu.Lock()
	defer b.txMu.Unlock()
	for k, t := range b.txs {
		b.expireLocked(t, now)
		switch t.state {
		case TxCommitted, TxRolledBack, TxTimedOut:
			if now.Sub(t.finished) > finishedTxRetention {
				delete(b.txs, k)
			}
		}
	}
}

func (b *Broker) runTxSweeper() {
	defer b.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-tick.C:
			b.sweepTxs()
		}
	}
}

// commitBranch writes t's messages as one batch and finishes t. heuristic marks an operator's
// decision, after which the branch stays (as heuristically committed) until forgotten.
// prev is the state before the commit began: the branch returns to it when the commit could
// not be queued (back-pressure) or, for XA, when the write failed (the transaction manager
// retries; after a restart recovery decides).
func (b *Broker) commitBranch(t *tx, heuristic bool, prev TxState) ([]TopicPosition, error) {
	return b.commitBranchDecided(t, heuristic, prev, nil)
}

// commitBranchDecided is commitBranch; with dec, the commit batch also carries the
// coordinator's decision record dec (decisions.go), so the commit and the decision are one
// batch, durable together or not at all.
func (b *Broker) commitBranchDecided(t *tx, heuristic bool, prev TxState, dec *DecisionRecord) ([]TopicPosition, error) {
	op := txOpCommit
	if heuristic {
		op = txOpHeurCommit
	}
	if dec != nil {
		op = txOpCommitDecided
	}
	final := TxCommitted
	if heuristic {
		final = TxHeurCommitted
	}
	if len(t.msgs) == 0 && !heuristic && dec == nil {
		b.txMu.Lock()
		b.finishLocked(t, TxCommitted)
		b.txMu.Unlock()
		return nil, nil
	}
	req := b.txRequest(t, op, true)
	if dec != nil {
		req.decisions = []DecisionRecord{*dec}
		req.size = decisionBatchSize(req.decisions) - batchHeaderSize + req.size
	}
	req.applied = func(int64) {
		b.txMu.Lock()
		defer b.txMu.Unlock()
		if heuristic {
			t.state = final
			t.msgs, t.topics, t.parts = nil, nil, nil
		} else {
			b.finishLocked(t, final)
		}
	}
	if _, err := b.submit(req); err != nil {
		if b.opts.Replicated && errors.Is(err, ErrOutcomeUnknown) && !t.durable {
			// Proposed, and only this node's memory holds the transaction: it stays
			// committing until the applied log says committed or lost (txoutcome.go).
			b.commitOutcomeUnknown(t, prev, req.term)
			return nil, err
		}
		b.txMu.Lock()
		switch {
		case t.xa || errors.Is(err, ErrBackpressure):
			// Back as it was, unless applying an entry changed it meanwhile (cluster mode: this
			// commit's own, applied before its answer said outcome unknown, or a later leader's
			// decision on the branch): memory follows the applied log, as on every member.
			b.restoreLocked(t, TxCommitting, prev)
		case errors.Is(err, ErrOutcomeUnknown):
			// A single node whose log failed: the commit batch may be in the log: never report
			// rolled_back. The transaction stays committing (shown as open) until the restart.
		default:
			// The log failed: the broker refuses writes until a restart, which cuts the
			// log at the durable end recorded by fail, so the commit batch is not there.
			b.finishLocked(t, TxRolledBack)
		}
		b.txMu.Unlock()
		return nil, err
	}
	out := make([]TopicPosition, len(req.offsets))
	for i, o := range req.offsets {
		out[i] = TopicPosition{Topic: req.topics[i].name, Partition: o.Partition, Offset: o.Offset}
	}
	b.txMu.Lock()
	t.offsets = out
	b.txMu.Unlock()
	return out, nil
}

// txKeyID strips the local prefix for messages.
func txKeyID(key string) string { return strings.TrimPrefix(key, "TX:") }
