package textproto

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/broker"
)

// The transaction command over the broker's local transactions (txkey TX:<id>) and XA
// branches (txkey XID:<format_id>:<gtrid hex>:<bqual hex>), which share the broker's journal
// with the HTTP door:
//
//	local: BEGIN (txkey TX:-; the answer is the new txkey), COMMIT_ONE_PHASE, ROLLBACK
//	XA:    BEGIN = start(noflags), END = end(success), PREPARE (answers 0 ok or 3 read-only),
//	       COMMIT_ONE_PHASE, COMMIT_TWO_PHASE, ROLLBACK, FORGET, RECOVER (txkey ignored)
//
// A commit answers one "<topic> <partition> <offset>" line per message.

// XA votes of PREPARE, as javax.transaction.xa.XAResource numbers them.
const (
	voteOK       = "0"
	voteReadOnly = "3"
)

// transaction runs a transaction verb. As over HTTP, every verb (RECOVER included) needs a
// token with some produce pattern; a put in a transaction needs produce on its topic
// (readPutPayload).
func (c *conn) transaction(r request) {
	c.s.stats.cmdTransaction.Add(1)
	if !c.allowed(rightProducer, "", r.opaque) {
		return
	}
	if r.txType == txRecover {
		xids := c.s.b.XARecover()
		var sb strings.Builder
		for i, x := range xids {
			if i > 0 {
				sb.WriteString("\r\n")
			}
			sb.WriteString(x.String())
		}
		c.send(appendResult(nil, codeOK, r.opaque, sb.String()))
		return
	}
	var (
		text string
		err  error
	)
	if strings.HasPrefix(r.txkey, "TX:") {
		text, err = c.localTx(r)
	} else {
		text, err = c.xaTx(r)
	}
	if err != nil {
		c.answerErr(r.opaque, err)
		return
	}
	c.send(appendResult(nil, codeOK, r.opaque, text))
}

func (c *conn) localTx(r request) (string, error) {
	s := c.s
	id := strings.TrimPrefix(r.txkey, "TX:")
	if r.txType != txBegin && id == "-" {
		return "", fail(codeBadRequest, "TX:- only begins a transaction; use the txkey that BEGIN answered")
	}
	switch r.txType {
	case txBegin:
		if id != "-" {
			return "", fail(codeBadRequest, "a local BEGIN takes the txkey TX:-: the broker chooses the id and answers the txkey")
		}
		id, err := s.b.BeginTx(r.timeout)
		if err != nil {
			return "", err
		}
		s.txs.begin("TX:"+id, false, broker.Xid{})
		s.log.Debug("transaction begun", "tx", "TX:"+id, "session", r.session)
		return "TX:" + id, nil
	case txCommitOne:
		out, err := s.b.CommitTx(s.ctx, id)
		s.txs.finished(r.txkey, err)
		if err != nil {
			return "", err
		}
		return positions(out), nil
	case txRollback:
		err := s.b.RollbackTx(s.ctx, id)
		s.txs.finished(r.txkey, rolledBack(err))
		return "ok", err
	}
	return "", fail(codeBadRequest, "a local transaction takes BEGIN, COMMIT_ONE_PHASE or ROLLBACK, not %s; the XA verbs need an XID txkey", r.txType)
}

// rolledBack turns a successful rollback into the tracker's errRolledBack.
func rolledBack(err error) error {
	if err == nil {
		return errRolledBack
	}
	return err
}

func (c *conn) xaTx(r request) (string, error) {
	s := c.s
	xid, err := broker.ParseXid(r.txkey)
	if err != nil {
		return "", err
	}
	switch r.txType {
	case txBegin:
		if err := s.b.XAStart(xid, broker.XANoFlags, r.timeout); err != nil {
			return "", err
		}
		s.txs.begin(r.txkey, true, xid)
		return "ok", nil
	case txEnd:
		return "ok", s.b.XAEnd(xid, broker.XASuccess)
	case txPrepare:
		ro, err := s.b.XAPrepare(s.ctx, xid)
		switch {
		case err != nil:
			s.txs.failed(r.txkey, err)
			return "", err
		case ro:
			s.txs.finished(r.txkey, nil)
			return voteReadOnly, nil
		}
		s.txs.prepared(r.txkey)
		return voteOK, nil
	case txCommitOne, txCommitTwo:
		out, err := s.b.XACommit(s.ctx, xid, r.txType == txCommitOne)
		s.txs.finished(r.txkey, err)
		if err != nil {
			return "", err
		}
		return positions(out), nil
	case txRollback:
		err := s.b.XARollback(s.ctx, xid)
		s.txs.finished(r.txkey, rolledBack(err))
		return "ok", err
	case txForget:
		return "ok", s.b.XAForget(s.ctx, xid)
	}
	return "", fail(codeBadRequest, "unknown transaction type %s", r.txType)
}

func positions(ps []broker.TopicPosition) string {
	var sb strings.Builder
	for i, p := range ps {
		if i > 0 {
			sb.WriteString("\r\n")
		}
		sb.WriteString(p.Topic)
		sb.WriteByte(' ')
		sb.WriteString(strconv.Itoa(p.Partition))
		sb.WriteByte(' ')
		sb.WriteString(strconv.FormatInt(p.Offset, 10))
	}
	return sb.String()
}

// txPut adds a put to a transaction; it answers "<partition> -1": the offset is known at
// commit, and the partition is the one asked for (-1 when the broker chooses at commit).
func (c *conn) txPut(r request) bool {
	payload, stop, keep := c.readPutPayload(nil, r)
	if stop {
		return keep
	}
	m, err := putMessage(payload, r.flag, r.partition)
	if err == nil {
		msgs := []broker.TxMessage{{Topic: r.topic, Message: m}}
		if strings.HasPrefix(r.txkey, "TX:") {
			err = c.s.b.AddTx(strings.TrimPrefix(r.txkey, "TX:"), msgs)
		} else {
			var xid broker.Xid
			if xid, err = broker.ParseXid(r.txkey); err == nil {
				err = c.s.b.XAAdd(xid, msgs)
			}
		}
	}
	if err != nil {
		c.s.stats.putFailed.Add(1)
		c.answerErr(r.opaque, err)
		return true
	}
	c.send(appendPutResult(nil, r.opaque, r.partition, -1))
	return true
}

// errRolledBack marks a successful rollback for the tracker.
var errRolledBack = errors.New("rolled back")

// txTracker follows the transactions begun on this door, for stats transactions: the broker
// reports prepared branches (XARecover) but no counts or ages of the others.
type txTracker struct {
	mu   sync.Mutex
	open map[string]*trackedTx

	committed, rolledBack, timedOut atomic.Int64
}

type trackedTx struct {
	xa       bool
	xid      broker.Xid
	begun    time.Time
	prepared time.Time // zero until prepared
}

// maxTracked bounds the tracker; past it new transactions are counted but not followed.
const maxTracked = 100000

func (t *txTracker) begin(key string, xa bool, xid broker.Xid) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.open) < maxTracked {
		t.open[key] = &trackedTx{xa: xa, xid: xid, begun: time.Now()}
	}
}

func (t *txTracker) prepared(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if tx, ok := t.open[key]; ok {
		tx.prepared = time.Now()
	}
}

// finished records an outcome: nil committed, errRolledBack rolled back, an error of the
// commit itself (timed out, rolled back) as failed does.
func (t *txTracker) finished(key string, err error) {
	switch {
	case err == nil:
		t.committed.Add(1)
	case errors.Is(err, errRolledBack):
		t.rolledBack.Add(1)
	default:
		t.failed(key, err)
		return
	}
	t.mu.Lock()
	delete(t.open, key)
	t.mu.Unlock()
}

// failed records a verb's error when it ended the transaction.
func (t *txTracker) failed(key string, err error) {
	var xe *broker.XAError
	ended := false
	switch {
	case errors.Is(err, broker.ErrTxTimedOut):
		t.timedOut.Add(1)
		ended = true
	case errors.As(err, &xe) && xe.Code == broker.XARBTimeout:
		t.timedOut.Add(1)
		ended = true
	case errors.As(err, &xe) && xe.Code == broker.XARBRollback:
		t.rolledBack.Add(1)
		ended = true
	case errors.Is(err, broker.ErrTxNotFound), errors.As(err, &xe) && xe.Code == broker.XAERNota:
		ended = true
	}
	if ended {
		t.mu.Lock()
		delete(t.open, key)
		t.mu.Unlock()
	}
}

// txCounts is what stats transactions shows.
type txCounts struct {
	open, prepared, heuristic      int
	committed, rolledBack, timeout int64
	oldestPrepared                 time.Duration
}

// counts refreshes the tracked transactions' states from the broker and counts them.
func (s *Server) txCounts() txCounts {
	var n txCounts
	t := &s.txs
	t.mu.Lock()
	now := time.Now()
	for key, tx := range t.open {
		var state broker.TxState
		if tx.xa {
			st, ok := s.b.XAState(tx.xid)
			if !ok {
				delete(t.open, key) // finished through the other door
				continue
			}
			state = st
		} else {
			info, err := s.b.TxStatus(strings.TrimPrefix(key, "TX:"))
			if err != nil {
				delete(t.open, key)
				continue
			}
			state = info.State
		}
		switch state {
		case broker.TxTimedOut:
			t.timedOut.Add(1)
			delete(t.open, key)
		case broker.TxCommitted:
			t.committed.Add(1)
			delete(t.open, key)
		case broker.TxRolledBack:
			t.rolledBack.Add(1)
			delete(t.open, key)
		case broker.TxPrepared, broker.TxCommitting, broker.TxRollingBack, broker.TxHeurCommitted, broker.TxHeurRolledBack:
			if !tx.prepared.IsZero() && state == broker.TxPrepared {
				n.oldestPrepared = max(n.oldestPrepared, now.Sub(tx.prepared))
			}
		default:
			n.open++
		}
	}
	t.mu.Unlock()
	for _, x := range s.b.XARecover() {
		st, _ := s.b.XAState(x)
		switch st {
		case broker.TxHeurCommitted, broker.TxHeurRolledBack:
			n.heuristic++
		default:
			n.prepared++
		}
	}
	n.committed, n.rolledBack, n.timeout = t.committed.Load(), t.rolledBack.Load(), t.timedOut.Load()
	return n
}
