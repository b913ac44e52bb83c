package broker

import (
	"context"
	"errors"
	"time"
)

// The XA verbs of javax.transaction.xa.XAResource over the broker (see tx.go for the states).

// xaBranch finds a branch, applying its timeout. The caller holds txMu.
func (b *Broker) xaBranch(xid Xid) (*tx, error) {
	if err := xid.Validate(); err != nil {
		return nil, err
	}
	t, ok := b.txs[xid.String()]
	if !ok || !t.xa {
		return nil, xaErr(XAERNota, "no branch %s", xid)
	}
	b.expireLocked(t, b.opts.Now())
	if t.state == TxTimedOut {
		delete(b.txs, t.key)
		return nil, xaErr(XARBTimeout, "branch %s passed its timeout and was rolled back", xid)
	}
	return t, nil
}

// XAStart associates work with a branch: noflags creates it, join re-enters an idle branch,
// resume re-enters a suspended one. timeout 0 means 30s; it applies until prepare.
func (b *Broker) XAStart(xid Xid, flags string, timeout time.Duration) error {
	if b.closed.Load() {
		return xaErr(XAERRMFail, "broker is closing")
	}
	if err := xid.Validate(); err != nil {
		return err
	}
	b.txMu.Lock()
	defer b.txMu.Unlock()
	switch flags {
	case XANoFlags, "":
		key := xid.String()
		if _, ok := b.txs[key]; ok {
			return xaErr(XAERDupID, "branch %s already exists", xid)
		}
		d, err := txTimeout(timeout)
		if err != nil {
			return xaErr(XAERInval, "%v", err)
		}
		now := b.opts.Now()
		b.txs[key] = &tx{key: key, xa: true, xid: xid, state: TxOpen, created: now, deadline: now.Add(d)}
		return nil
	case XAJoin, XAResume:
		t, err := b.xaBranch(xid)
		if err != nil {
			return err
		}
		want := TxIdle
		if flags == XAResume {
			want = TxSuspended
		}
		if t.state == TxRollbackOnly {
			return xaErr(XARBRollback, "branch %s is marked rollback-only", xid)
		}
		if t.state != want {
			return xaErr(XAERProto, "start(%s) needs a %s branch; %s is %s", flags, want, xid, t.state)
		}
		t.state = TxOpen
		return nil
	}
	return xaErr(XAERInval, "start flags must be noflags, join or resume, not %q", flags)
}

// XAAdd adds messages to an active branch.
func (b *Broker) XAAdd(xid Xid, msgs []TxMessage) error {
	b.txMu.Lock()
	defer b.txMu.Unlock()
	t, err := b.xaBranch(xid)
	if err != nil {
		return err
	}
	if t.state != TxOpen {
		return xaErr(XAERProto, "messages need an active branch; %s is %s (call start first)", xid, t.state)
	}
	return b.addMessages(t, msgs)
}

// XAEnd dissociates work from a branch: success makes it idle, suspend suspended, fail
// rollback-only.
func (b *Broker) XAEnd(xid Xid, flags string) error {
	b.txMu.Lock()
	defer b.txMu.Unlock()
	t, err := b.xaBranch(xid)
	if err != nil {
		return err
	}
	switch flags {
	case XASuccess, XAFail:
		if t.state != TxOpen && t.state != TxSuspended {
			return xaErr(XAERProto, "end(%s) needs an active or suspended branch; %s is %s", flags, xid, t.state)
		}
		if flags == XAFail {
			t.state = TxRollbackOnly
		} else {
			t.state = TxIdle
		}
		return nil
	case XASuspend:
		if t.state != TxOpen {
			return xaErr(XAERProto, "end(suspend) needs an active branch; %s is %s", xid, t.state)
		}
		t.state = TxSuspended
		return nil
	}
	return xaErr(XAERInval, "end flags must be success, fail or suspend, not %q", flags)
}

// XAPrepare makes an idle branch durable and votes. readOnly (the rdonly vote) means the
// branch held no messages and is already forgotten: it needs no phase 2. XAER_RMFAIL for a
// prepare whose outcome is unknown (ErrOutcomeUnknown: in cluster mode, leadership lost after
// proposing) keeps the branch, prepared once its batch is applied, so that the transaction
// manager's rollback is written; any other failure rolls it back (nothing was written).
func (b *Broker) XAPrepare(ctx context.Context, xid Xid) (readOnly bool, err error) {
	b.txMu.Lock()
	t, err := b.xaBranch(xid)
	if err != nil {
		b.txMu.Unlock()
		return false, err
	}
	switch t.state {
	case TxIdle:
	case TxRollbackOnly:
		b.finishLocked(t, TxRolledBack)
		b.txMu.Unlock()
		return false, xaErr(XARBRollback, "branch %s was marked rollback-only and is rolled back", xid)
	default:
		state := t.state
		b.txMu.Unlock()
		return false, xaErr(XAERProto, "prepare needs an idle branch; %s is %s", xid, state)
	}
	if len(t.msgs) == 0 {
		b.finishLocked(t, TxCommitted)
		b.txMu.Unlock()
		return true, nil
	}
	t.state = TxPreparing
	t.deadline = time.Time{} // prepared branches never time out
	b.txMu.Unlock()

	req := b.txRequest(t, txOpPrepare, false)
	req.applied = func(pos int64) {
		b.txMu.Lock()
		t.state = TxPrepared
		if !b.opts.Replicated {
			// In cluster mode applying the entry recorded its position already (replayTx from
			// ApplyEntry, on the same branch); the request may not know it.
			t.preparePos = pos
		}
		t.durable = true
		b.txMu.Unlock()
	}
	if _, err := b.submit(req); err != nil {
		b.txMu.Lock()
		switch {
		case errors.Is(err, ErrOutcomeUnknown):
			// The prepare batch may be in the log, or (cluster mode) its entry committed and
			// applied on every member, this one included (applying it made the branch prepared,
			// maybe before this answer). The branch stays: prepared if applied, else preparing
			// with prepareUnknown, which XARollback accepts and writes its rollback for. The
			// transaction manager, told XAER_RMFAIL, rolls back, and that rollback reaches every
			// member; finishing the branch here left it prepared on the others (and in the log)
			// while this one answered XAER_NOTA and wrote nothing.
			if t.state == TxPreparing {
				t.prepareUnknown = true
			}
		default:
			// Refused before it was written or proposed: nothing of the prepare is anywhere.
			b.finishLocked(t, TxRolledBack)
		}
		b.txMu.Unlock()
		return false, xaErr(XAERRMFail, "prepare %s: %v", xid, err)
	}
	return false, nil
}

// XACommit commits a branch: two-phase from prepared, one-phase from idle. In cluster mode a
// one-phase commit answered XAER_RMFAIL for an unknown outcome keeps the branch committing (a
// rollback or commit of it answers XAER_RMFAIL) until the applied log settles it (txoutcome.go).
func (b *Broker) XACommit(ctx context.Context, xid Xid, onePhase bool) ([]TopicPosition, error) {
	b.txMu.Lock()
	t, err := b.xaBranch(xid)
	if err != nil {
		b.txMu.Unlock()
		return nil, err
	}
	switch {
	case t.state == TxHeurCommitted:
		b.txMu.Unlock()
		return nil, xaErr(XAHeurCom, "branch %s was heuristically committed; call forget", xid)
	case t.state == TxHeurRolledBack:
		b.txMu.Unlock()
		return nil, xaErr(XAHeurRB, "branch %s was heuristically rolled back; call forget", xid)
	case t.state == TxRollbackOnly:
		b.finishLocked(t, TxRolledBack)
		b.txMu.Unlock()
		return nil, xaErr(XARBRollback, "branch %s was marked rollback-only and is rolled back", xid)
	case t.commitUnknown:
		b.txMu.Unlock()
		return nil, xaErr(XAERRMFail, "the outcome of %s's one-phase commit is not known yet; retry", xid)
	case onePhase && t.state != TxIdle:
		state := t.state
		b.txMu.Unlock()
		return nil, xaErr(XAERProto, "one-phase commit needs an idle branch; %s is %s", xid, state)
	case !onePhase && t.state != TxPrepared:
		state := t.state
		b.txMu.Unlock()
		return nil, xaErr(XAERProto, "two-phase commit needs a prepared branch; %s is %s", xid, state)
	}
	prev := t.state
	t.state = TxCommitting
	b.txMu.Unlock()
	out, err := b.commitBranch(t, false, prev)
	if err != nil {
		e := xaErr(XAERRMFail, "commit %s: %v", xid, err)
		e.err = err
		return nil, e
	}
	return out, nil
}

// XARollback rolls a branch back.
func (b *Broker) XARollback(ctx context.Context, xid Xid) error {
	b.txMu.Lock()
	t, err := b.xaBranch(xid)
	if err != nil {
		b.txMu.Unlock()
		return err
	}
	switch t.state {
	case TxIdle, TxSuspended, TxRollbackOnly:
		b.finishLocked(t, TxRolledBack)
		b.txMu.Unlock()
		return nil
	case TxHeurCommitted:
		b.txMu.Unlock()
		return xaErr(XAHeurCom, "branch %s was heuristically committed; call forget", xid)
	case TxHeurRolledBack:
		b.txMu.Unlock()
		return xaErr(XAHeurRB, "branch %s was heuristically rolled back; call forget", xid)
	case TxPrepared:
	case TxPreparing:
		if !t.prepareUnknown {
			b.txMu.Unlock()
			return xaErr(XAERProto, "rollback of %s while its prepare is being written", xid)
		}
		// The prepare's outcome is unknown: a rollback after it in the log undoes it wherever
		// it landed, and changes nothing where it did not.
	case TxCommitting:
		unknown := t.commitUnknown
		b.txMu.Unlock()
		if unknown { // a rollback cannot undo the commit if its entry is applied later
			return xaErr(XAERRMFail, "the outcome of %s's one-phase commit is not known yet; retry", xid)
		}
		return xaErr(XAERProto, "rollback of %s in state %s", xid, TxCommitting)
	default:
		state := t.state
		b.txMu.Unlock()
		return xaErr(XAERProto, "rollback of %s in state %s", xid, state)
	}
	prev := t.state
	t.state = TxRollingBack
	b.txMu.Unlock()
	if err := b.writeOutcome(t, txOpRollback, func() { b.finishLocked(t, TxRolledBack) }); err != nil {
		b.txMu.Lock()
		b.restoreLocked(t, TxRollingBack, prev) // unless an entry applied meanwhile decided
		b.txMu.Unlock()
		return xaErr(XAERRMFail, "rollback %s: %v", xid, err)
	}
	return nil
}

// XAForget forgets a heuristically completed branch.
func (b *Broker) XAForget(ctx context.Context, xid Xid) error {
	b.txMu.Lock()
	t, err := b.xaBranch(xid)
	if err != nil {
		b.txMu.Unlock()
		return err
	}
	if t.state != TxHeurCommitted && t.state != TxHeurRolledBack {
		state := t.state
		b.txMu.Unlock()
		return xaErr(XAERProto, "forget is for heuristically completed branches; %s is %s", xid, state)
	}
	t.forgets++
	b.txMu.Unlock()
	if err := b.writeOutcome(t, txOpForget, func() { delete(b.txs, t.key) }); err != nil {
		b.txMu.Lock()
		t.forgets--
		b.txMu.Unlock()
		return xaErr(XAERRMFail, "forget %s: %v", xid, err)
	}
	return nil
}

// XAHeuristic is an operator's decision on a prepared branch, made durable. The transaction
// manager's later commit or rollback gets XA_HEURCOM or XA_HEURRB until it forgets the branch.
func (b *Broker) XAHeuristic(ctx context.Context, xid Xid, commit bool) error {
	b.txMu.Lock()
	t, err := b.xaBranch(xid)
	if err != nil {
		b.txMu.Unlock()
		return err
	}
	if t.state != TxPrepared {
		state := t.state
		b.txMu.Unlock()
		return xaErr(XAERProto, "a heuristic decision needs a prepared branch; %s is %s", xid, state)
	}
	if commit {
		t.state = TxCommitting
		b.txMu.Unlock()
		if _, err := b.commitBranch(t, true, TxPrepared); err != nil {
			return xaErr(XAERRMFail, "heuristic commit %s: %v", xid, err)
		}
		b.opts.Logger.Warn("heuristic commit", "xid", xid.String())
		return nil
	}
	t.state = TxRollingBack
	b.txMu.Unlock()
	err = b.writeOutcome(t, txOpHeurRollback, func() {
		t.state = TxHeurRolledBack
		t.msgs, t.topics, t.parts = nil, nil, nil
	})
	if err != nil {
		b.txMu.Lock()
		b.restoreLocked(t, TxRollingBack, TxPrepared) // unless an entry applied meanwhile decided
		b.txMu.Unlock()
		return xaErr(XAERRMFail, "heuristic rollback %s: %v", xid, err)
	}
	b.opts.Logger.Warn("heuristic rollback", "xid", xid.String())
	return nil
}

// XARecover lists prepared and heuristically completed branches (they survive restarts).
func (b *Broker) XARecover() []Xid {
	b.txMu.Lock()
	defer b.txMu.Unlock()
	var out []Xid
	for _, t := range b.txs {
		// A commit or rollback in flight is listed only for a branch that was prepared: a
		// one-phase commit's branch never was, and a manager must not try to finish it.
		inFlight := (t.state == TxCommitting || t.state == TxRollingBack) && t.durable
		if t.xa && (t.state == TxPrepared || t.state == TxHeurCommitted || t.state == TxHeurRolledBack || inFlight) {
			out = append(out, t.xid)
		}
	}
	sortXids(out)
	return out
}

// XAState reports a branch's state (for tests, the CLI and stats).
func (b *Broker) XAState(xid Xid) (TxState, bool) {
	b.txMu.Lock()
	defer b.txMu.Unlock()
	t, ok := b.txs[xid.String()]
	if !ok || !t.xa {
		return "", false
	}
	return t.state, true
}
