package xa

import "time"

// In-doubt transactions and their other branches. A transaction is in_doubt when a branch's
// outcome contradicts the decision (a heuristic answer, a branch gone before its commit was
// sent), or when the live path could not tell whether its commit decision reached the log.
// In the first case the commit decision is durable: every other branch still prepared is
// committed by recovery as before (holding their locks until an operator looks would turn one
// hazard into an outage, and committing is what the decision says); only the contradicting
// branch waits for Resolve. In the second case nothing is committed until a restart reads the
// log back, the decision table heals (applyHealed), or an operator resolves it.

// commitBranchInDoubt reports whether recovery commits st's branch on resource although st is
// in_doubt: a commit was sent to some branch (which happens only once the commit decision is
// durable) and this branch did not contradict it. The caller holds c.mu.
func commitBranchInDoubt(st *txState, resource string) bool {
	if bs := st.branch(resource); bs != nil && bs.state == BranchHeuristic {
		return false
	}
	return commitDecided(st)
}

// commitDecided reports whether st's commit decision is known to be durable. The caller
// holds c.mu.
func commitDecided(st *txState) bool {
	for _, bs := range st.branches {
		if bs.commitSent {
			return true
		}
	}
	return false
}

// settleInDoubt marks committed the branches of an in_doubt transaction with a durable commit
// decision whose commit was sent and that a fresh scan no longer lists; the transaction stays
// in_doubt. The caller holds c.mu.
func (c *Coordinator) settleInDoubt(st *txState, present map[string]scan) {
	if !commitDecided(st) {
		return
	}
	for _, bs := range st.branches {
		if bs.state != BranchPrepared || !bs.commitSent {
			continue
		}
		if sc := present[bs.resource]; sc.after(st.quiet) && !sc.gtrids[st.gtrid] {
			bs.state = BranchCommitted
		}
	}
}

// applyHealed takes the outcomes the decision table found when it healed after a write of
// unknown outcome (declog_sql_heal.go) and settles, as a restart's load would, each
// transaction left in_doubt with decision_log_failed: committing when its commit decision is
// in the table (a commit may be sent to every branch), rolling back when it was not written
// (the table holds its rollback decision). An operator's resolve found in the table (its
// caller was told it was not applied) takes effect as Resolve would. Recovery then finishes
// the branches. An outcome
// whose transaction is still owned by its GlobalTx (which has not marked it in doubt yet) is
// kept for the next pass. Recovery calls it with recMu held.
func (c *Coordinator) applyHealed() {
	h, ok := c.dlog.(interface{ takeHealed() map[string]record })
	if !ok {
		return
	}
	taken := h.takeHealed()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(taken) > 0 {
		if c.healed == nil {
			c.healed = map[string]record{}
		}
		for g, r := range taken {
			c.healed[g] = r
		}
	}
	for g, r := range c.healed {
		st := c.txs[g]
		if st != nil && (st.live || st.resolving) {
			continue // settled by a later pass
		}
		delete(c.healed, g)
		if st == nil || st.status != StatusInDoubt || st.code != CodeDecisionLogFailed && r.Kind != recResolve {
			continue
		}
		switch d := decisionOf(&r); {
		case r.Kind == recResolve && d != decideNone:
			st.status, st.by, st.decided, st.code, st.message = r.Status, r.By, r.Decided, r.Code, r.Message
			for _, bs := range st.branches {
				bs.commitSent = true // as Resolve: the operator answers for the branches gone
			}
		case d == decideCommit:
			st.status, st.decided, st.code, st.message = StatusCommitting, r.Decided, r.Code, r.Message
			for _, bs := range st.branches {
				bs.commitSent = true // as in the record (snapshot of recCommit)
			}
		case d == decideAbort:
			st.status, st.decided, st.code, st.message = StatusRollingBack, r.Decided, r.Code, r.Message
		default:
			continue
		}
		st.nextTry, st.tries = time.Time{}, 0
		st.quiet = c.scanSeq.Add(1)
		c.log.Warn("decision log healed: a global transaction in doubt has its outcome", "id", st.id, "gtrid", st.gtrid, "status", string(st.status))
	}
}
