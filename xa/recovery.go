package xa

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Recovery: finishes what the live path could not (a database down at phase 2, a crash), and
// rolls back what nobody will ever decide. One pass:
//
//  1. scan every resource for prepared branches of Imago's format and this node;
//  2. for each branch: skip it while its transaction runs in this process (its PREPARE may be
//     in flight); commit it when the transaction's decision is commit (also when the
//     transaction is in_doubt because another of its branches contradicted a durable commit
//     decision: see commitBranchInDoubt); roll it back when the
//     decision is rollback; with no decision (unknown to the log, or never decided) roll it
//     back once it has been seen for Options.Grace (presumed abort); leave the other branches
//     of in_doubt ones to Resolve;
//  3. for each decided transaction no longer live: a branch its resource no longer lists
//     (scanned successfully, by a scan begun after the transaction stopped being live; see
//     recovery_scan.go) is finished — for a commit decision only if a commit was sent to
//     it (or may have been, by a previous run after the durable decision), otherwise the
//     transaction is marked in_doubt; once every branch is finished, "done" is logged.
//
// XAER_NOTA from a phase-2 call is not taken as an answer by itself: MariaDB lists a branch
// still attached to a dying session but answers XAER_NOTA to other sessions, so the next scan
// decides. Failures back off per transaction (0.5s doubling to 1m).

const (
	backoffBase = 500 * time.Millisecond
	backoffMax  = time.Minute
)

func (c *Coordinator) kickRecovery() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Coordinator) runRecovery() {
	defer c.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.stop
		cancel()
	}()
	t := time.NewTicker(c.opts.RecoveryInterval)
	defer t.Stop()
	for {
		if err := c.Recover(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("xa recovery pass incomplete", "err", err)
		}
		select {
		case <-c.stop:
			return
		case <-t.C:
		case <-c.kick:
		}
	}
}

func xidKey(gtrid, resource string) string { return gtrid + "/" + resource }

// Recover runs one recovery pass now (the loop also runs them). It returns the errors of
// resources that could not be scanned or finished.
func (c *Coordinator) Recover(ctx context.Context) error {
	c.recMu.Lock()
	defer c.recMu.Unlock()
	var errs []error
	present := map[string]scan{} // resource → its scan in this pass
	c.applyHealed()
	c.checkLeases(ctx)
	for _, name := range c.order {
		lctx, cancel := context.WithTimeout(ctx, c.opts.PhaseTimeout)
		err := c.holdLease(lctx, name) // never act on a database without the node lease there
		cancel()
		var sc scan
		if err == nil {
			sc, err = c.scan(ctx, name)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("scan %s: %w", name, err))
			c.metrics.recovery.WithLabelValues(name, "error").Inc()
			continue
		}
		present[name] = sc
	}
	c.noteScans(present)
	seen := map[string]bool{}
	for _, name := range c.order {
		for g := range present[name].gtrids {
			seen[xidKey(g, name)] = true
			if err := c.recoverBranch(ctx, g, name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	c.mu.Lock()
	for k := range c.firstSeen {
		if !seen[k] {
			delete(c.firstSeen, k)
		}
	}
	c.mu.Unlock()
	c.settle(present)
	c.prune()
	return errors.Join(errs...)
}

// recoverBranch acts on one prepared branch found by the scan.
func (c *Coordinator) recoverBranch(ctx context.Context, gtrid, resource string) error {
	now := c.opts.Now()
	key := xidKey(gtrid, resource)
	c.mu.Lock()
	st := c.txs[gtrid]
	if st != nil && (st.live || st.abandoned || now.Before(st.nextTry) || st.status == StatusInDoubt && !commitBranchInDoubt(st, resource)) {
		c.mu.Unlock()
		return nil
	}
	action := ""
	switch {
	case st != nil && (st.status == StatusCommitting || st.status == StatusCommitted || st.status == StatusInDoubt):
		action = "commit"
	case st != nil && (st.status == StatusRollingBack || st.status == StatusRolledBack):
		action = "rollback"
	default:
		first, ok := c.firstSeen[key]
		if !ok {
			c.firstSeen[key] = now
			first = now
		}
		if now.Sub(first) < c.opts.Grace {
			c.mu.Unlock()
			return nil
		}
		action = "presumed_abort"
		c.mu.Unlock()
		var err error
		if st, err = c.recordPresumedAbort(gtrid, resource, st, now); err != nil {
			c.metrics.recovery.WithLabelValues(resource, "error").Inc()
			return fmt.Errorf("presumed abort of %s on %s: not rolled back, its rollback decision could not be recorded: %w", gtrid, resource, err)
		}
		c.mu.Lock()
	}
	var bs *branchState
	if st != nil {
		bs = st.branch(resource)
		if bs == nil {
			bs = &branchState{resource: resource, state: BranchPrepared}
			st.branches = append(st.branches, bs)
		}
		if action == "commit" {
			bs.commitSent = true
		}
	}
	c.mu.Unlock()

	xid := makeXid(gtrid, resource)
	pctx, cancel := context.WithTimeout(ctx, c.opts.PhaseTimeout)
	defer cancel()
	var err error
	if action == "commit" {
		err = c.rms[resource].commit(pctx, xid)
	} else {
		err = c.rms[resource].rollback(pctx, xid)
	}
	code := XACode(err)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case err == nil:
		c.metrics.recovery.WithLabelValues(resource, action).Inc()
		c.log.Info("xa recovery", "action", action, "gtrid", gtrid, "resource", resource)
		if bs != nil {
			bs.state = BranchCommitted
			if action != "commit" {
				bs.state = BranchRolledBack
			}
		}
		delete(c.firstSeen, key)
		return nil
	case code == XAERNota:
		// Decided by the next scan (see above); a MariaDB branch still held by another
		// session (mysql_session.go) answers this while listed.
		c.metrics.recovery.WithLabelValues(resource, "held_by_session").Inc()
		c.log.Warn("xa recovery: a listed prepared branch answered XAER_NOTA; another session may still hold it", "action", action, "gtrid", gtrid, "resource", resource)
		return nil
	case action == "commit" && (code == XAHeurRB || code == XAHeurMix || isRollbackCode(code)):
		if st != nil {
			c.markInDoubt(st, bs, fmt.Sprintf("%s answered %s to the commit of a prepared branch", resource, code))
		}
		return nil
	}
	c.metrics.recovery.WithLabelValues(resource, "error").Inc()
	if st != nil {
		st.tries++
		d := backoffBase << min(st.tries, 10)
		st.nextTry = now.Add(min(d, backoffMax))
	}
	return fmt.Errorf("recovery %s of %s on %s: %w", action, gtrid, resource, err)
}

// recordPresumedAbort makes the rollback decision of an undecided transaction durable before
// recovery rolls any of its branches back: the decision is recorded before it is acted on, and
// the log then refuses a later commit decision for the gtrid (declog_first.go). st is the
// transaction as the coordinator knows it, or nil for a gtrid the log never held (a branch
// prepared by a run whose "preparing" record did not reach the log); that one is added to the
// table, so its "done" is logged once its branches are gone. On an error (the log failed, or
// holds another decision) nothing changes and the branch stays prepared. The caller does not
// hold c.mu.
func (c *Coordinator) recordPresumedAbort(gtrid, resource string, st *txState, now time.Time) (*txState, error) {
	const code, why = "presumed_abort", "prepared without a decision past the grace period"
	c.mu.Lock()
	fresh := st == nil
	if fresh {
		st = &txState{id: gtrid, gtrid: gtrid, created: now, settled: make(chan struct{}),
			branches: []*branchState{{resource: resource, state: BranchPrepared}}}
		close(st.settled)
	}
	prev := *st
	st.status, st.decided, st.code, st.message = StatusRollingBack, now, code, why
	rec := st.snapshot(recRollback)
	if !fresh {
		*st = prev
	}
	c.mu.Unlock()
	if err := c.dlog.appendSync(context.Background(), rec); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if fresh {
		if other := c.txs[gtrid]; other != nil {
			st = other // cannot happen while recMu is held; keep what the table has
		} else {
			c.txs[gtrid], c.byID[gtrid] = st, st
		}
	}
	st.status, st.decided, st.code, st.message = StatusRollingBack, now, code, why
	st.logged = true
	return st, nil
}

// markInDoubt records a heuristic hazard. The caller holds c.mu.
func (c *Coordinator) markInDoubt(st *txState, bs *branchState, why string) {
	if bs != nil {
		bs.state = BranchHeuristic
	}
	if st.status == StatusInDoubt {
		return
	}
	st.status, st.code, st.message = StatusInDoubt, "heuristic_hazard", why
	c.appendLog(st, recInDoubt, false)
	c.metrics.recovery.WithLabelValues(bs.resource, "in_doubt").Inc()
	c.log.Error("global transaction in doubt: an operator must resolve it", "id", st.id, "gtrid", st.gtrid, "reason", why)
}

// settle finishes the branches of decided transactions that their resources no longer list,
// and logs "done" for transactions whose every branch is finished.
func (c *Coordinator) settle(present map[string]scan) {
	now := c.opts.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.txs {
		if st.live || st.abandoned || st.status.Final() {
			continue
		}
		if st.status == StatusInDoubt {
			c.settleInDoubt(st, present)
			continue
		}
		commit := st.status == StatusCommitting
		rollback := st.status == StatusRollingBack
		undecided := !commit && !rollback
		if undecided && now.Sub(st.created) < c.opts.Grace {
			continue
		}
		done := true
		for _, bs := range st.branches {
			if bs.state != BranchPrepared && bs.state != BranchActive {
				continue
			}
			if !present[bs.resource].after(st.quiet) || present[bs.resource].gtrids[st.gtrid] {
				// Not scanned, scanned before the transaction's outcome last changed (a
				// stale scan: the branch may have been prepared since), or still prepared.
				done = false
				continue
			}
			switch {
			case commit && bs.commitSent:
				bs.state = BranchCommitted
			case commit:
				c.markInDoubt(st, bs, fmt.Sprintf("the prepared branch on %s is gone before its commit was sent", bs.resource))
			default:
				bs.state = BranchRolledBack
			}
		}
		if st.status == StatusInDoubt || !done {
			continue
		}
		st.finished, st.finishedMono = now, c.opts.Elapsed()
		st.quiet = c.scanSeq.Add(1)
		if commit {
			st.status = StatusCommitted
		} else {
			st.status = StatusRolledBack
			if undecided {
				st.code, st.message = "presumed_abort", "never decided"
			}
		}
		c.appendLog(st, recDone, false)
		c.metrics.outcome(st.status)
	}
}

// prune forgets finished transactions past their retention, and only those that a successful
// scan of every resource they used, begun after they finished, shows with no branch left
// prepared (see confirmedGone).
func (c *Coordinator) prune() {
	now, el := c.opts.Now(), c.opts.Elapsed()
	c.mu.Lock()
	defer c.mu.Unlock()
	for g, st := range c.txs {
		if st.live || !st.status.Final() {
			continue
		}
		keep := c.opts.StatusRetention
		if st.clientID != "" {
			keep = c.opts.Retention
		}
		// Past retention by both clocks: a wall clock stepped forward forgets nothing early.
		if now.Sub(st.finished) >= keep && el-st.finishedMono >= keep && c.confirmedGone(st) {
			delete(c.txs, g)
			if c.byID[st.id] == st {
				delete(c.byID, st.id)
			}
		}
	}
}
