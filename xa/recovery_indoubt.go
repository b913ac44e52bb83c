package xa

// In-doubt transactions and their other branches. A transaction is in_doubt when a branch's
// outcome contradicts the decision (a heuristic answer, a branch gone before its commit was
// sent), or when the live path could not tell whether its commit decision reached the log.
// In the first case the commit decision is durable: every other branch still prepared is
// committed by recovery as before (holding their locks until an operator looks would turn one
// hazard into an outage, and committing is what the decision says); only the contradicting
// branch waits for Resolve. In the second case nothing is committed until a restart reads the
// log back (or an operator resolves it).

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
