package broker

// Commits answered "outcome unknown" in cluster mode. The leader proposed a transaction's
// commit and lost its leadership (or stopped) before the entry was applied here: the entry may
// still commit (the next leader's log held it) or never. For a transaction that lives only in
// the memory of the leader it began on (a local transaction, or an XA branch committed in one
// phase from idle), nothing else can tell which, so it stays committing: no rollback, timeout
// or second commit is accepted (XA answers XAER_RMFAIL), since each could contradict an entry
// applied later (a rollback answered OK with the messages visible after all, or the messages
// written twice). TxStatus shows it open. The applied log settles it:
//
//   - its commit entry is applied here: committed (replayTx; an XA branch is forgotten);
//   - an entry of a later raft term is applied here first: the commit was lost. A raft log
//     never holds an entry of a term after an entry of a later term, and entries are applied in
//     log order, so no entry of the commit's term can commit after that one. The transaction
//     is back as it was before the commit (open, or idle), and a second commit writes its
//     messages once.
//
// Prepared branches need none of this: every member holds them, each verb on them is written
// (which needs a serving leader, and one serves only once it has applied, or lost for good,
// every entry of an earlier term), and they go back to their state at once (restoreLocked),
// unless applying an entry (their own, applied before its answer, or a later leader's
// decision) changed it meanwhile.

// commitOutcomeUnknown handles the commit of t, proposed in term and answered outcome unknown,
// for a transaction only this node's memory holds; prev is its state before the commit.
func (b *Broker) commitOutcomeUnknown(t *tx, prev TxState, term uint64) {
	b.stateMu.Lock()
	defer b.stateMu.Unlock()
	b.txMu.Lock()
	defer b.txMu.Unlock()
	if b.txs[t.key] != t || t.state != TxCommitting {
		return // its entry was applied before the answer came: the log has decided
	}
	t.commitUnknown, t.unknownTerm, t.unknownPrev = true, term, prev
	if b.raftAppliedTerm > term {
		b.commitLostLocked(t)
		return
	}
	if b.repl.unknown == nil {
		b.repl.unknown = make(map[*tx]struct{})
	}
	b.repl.unknown[t] = struct{}{}
}

// settleUnknownLocked settles the transactions whose commit outcome is unknown, now that an
// entry of term is applied. The caller holds stateMu (and not txMu).
func (b *Broker) settleUnknownLocked(term uint64) {
	if len(b.repl.unknown) == 0 {
		return
	}
	b.txMu.Lock()
	defer b.txMu.Unlock()
	for t := range b.repl.unknown {
		switch {
		case b.txs[t.key] != t || t.state != TxCommitting || !t.commitUnknown:
			delete(b.repl.unknown, t) // its commit entry was applied
		case term > t.unknownTerm:
			b.commitLostLocked(t)
			delete(b.repl.unknown, t)
		}
	}
}

// restoreLocked puts t back to prev after a verb that set it to during failed, if t is still
// the branch and still so: an entry applied meanwhile decided otherwise, on every member. The
// caller holds txMu.
func (b *Broker) restoreLocked(t *tx, during, prev TxState) {
	if b.txs[t.key] == t && t.state == during {
		t.state = prev
	}
}

// commitLostLocked puts t back as it was before its lost commit. The caller holds txMu.
func (b *Broker) commitLostLocked(t *tx) {
	t.state, t.commitUnknown = t.unknownPrev, false
	b.opts.Logger.Info("a commit answered outcome unknown was lost with its raft term; the transaction is back as before it",
		"tx", t.key, "term", t.unknownTerm, "state", t.state)
}
