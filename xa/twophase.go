package xa

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/imagomq/imago/broker"
)

// The two-phase commit of a global transaction (globaltx.go has the rest): prepare every branch
// with work, make the commit decision durable, then commit the prepared branches. With the
// decision log in the broker's commit log the broker branch skips both rounds: its commit is
// the batch that holds the decision (fusedBrokerBranch).

// markPreparing is what comes before a transaction's first PREPARE: a failed decision log
// refuses it (its error is returned: nothing may prepare), and the "preparing" record is queued
// once. The caller holds t.mu.
func (t *GlobalTx) markPreparing() error {
	c := t.c
	c.mu.Lock()
	defer c.mu.Unlock()
	t.st.status = StatusPreparing
	if err := c.dlog.failedErr(); err != nil {
		return err
	}
	if t.preparingQueued {
		return nil
	}
	t.preparingQueued = true
	return c.appendLog(t.st, recPreparing, false)
}

func (t *GlobalTx) commitTwoPhase(ctx context.Context, worked []*Branch) (TxInfo, error) {
	c := t.c
	st := t.st
	began := time.Now()
	// A failed decision log could not take the decision: nothing may prepare (each branch
	// would wait, locks held, for a restart). The "preparing" record is queued, not waited
	// for: presumed abort does not need it (see doc.go).
	if logErr := t.markPreparing(); logErr != nil {
		c.log.Warn("decision log failed: global transaction rolled back before prepare", "id", st.id, "gtrid", st.gtrid, "err", logErr)
		return t.rollbackLocked(ctx, &Reason{Code: CodeDecisionLogFailed, Message: "the decision log cannot take a decision: " + logErr.Error()}),
			fmt.Errorf("%w: %w: %v", ErrRolledBack, ErrDecisionLogFailed, logErr)
	}

	sctx, cancel := t.stmtCtx(ctx)
	defer cancel()
	errs := make([]error, len(worked))
	// With the decision log in the broker's commit log, the broker branch is not prepared: it
	// is ended now and committed by the batch that holds the decision (commitDecided).
	fused, dc := c.fusedBrokerBranch(worked)
	if fused != nil {
		if err := fused.conn.(*brokerBranch).end(broker.XASuccess, "prepare"); err != nil {
			return t.rollbackLocked(ctx, &Reason{Code: "prepare_failed", Message: err.Error()}), fmt.Errorf("%w: %w", ErrRolledBack, err)
		}
	}
	prepareBranch := func(i int) {
		b := worked[i]
		ro, err := b.conn.prepare(sctx)
		switch {
		case err == nil && ro:
			c.setBranch(b.bs, BranchReadOnly)
		case err == nil:
			c.setBranch(b.bs, BranchPrepared)
		case isRollbackCode(XACode(err)):
			c.setBranch(b.bs, BranchFailed)
			errs[i] = err
		default:
			// Unknown: it may be prepared. Dropping the connection detaches it; the
			// rollback decision makes recovery roll it back.
			b.broken = true
			c.setBranch(b.bs, BranchPrepared)
			errs[i] = err
		}
	}
	// The branches prepare in parallel, the last one on this goroutine (with the PostgreSQL
	// branch prepared by ExecPrepare, the MariaDB one is often the only one left).
	var todo []int
	for i, b := range worked {
		if b != fused && !b.prepared { // a branch prepared with its last statement (ExecPrepare) already voted
			todo = append(todo, i)
		}
	}
	inParallel(len(todo), func(k int) { prepareBranch(todo[k]) })
	c.metrics.observePhase("prepare", began)
	if err := errors.Join(errs...); err != nil {
		code := "prepare_failed"
		if errors.Is(sctx.Err(), context.DeadlineExceeded) {
			code = "timed_out"
		}
		return t.rollbackLocked(ctx, &Reason{Code: code, Message: err.Error()}), fmt.Errorf("%w: %w", ErrRolledBack, err)
	}
	if c.hookAfterPrepare != nil {
		if err := c.hookAfterPrepare(st.gtrid); err != nil {
			return t.abandon(), err
		}
	}
	if time.Now().After(t.deadline) {
		c.metrics.timeouts.Inc()
		return t.rollbackLocked(ctx, &Reason{Code: "timed_out", Message: "prepared after the transaction's timeout"}), fmt.Errorf("%w: %w", ErrRolledBack, ErrTimedOut)
	}
	var second []*Branch
	for _, b := range worked {
		if b.bs.state == BranchPrepared {
			second = append(second, b)
		}
	}

	// The decision: durable before the first phase-2 commit.
	decideBegan := time.Now()
	c.mu.Lock()
	st.status, st.decided = StatusCommitting, c.opts.Now()
	if fused != nil {
		fused.bs.state, fused.bs.commitSent = BranchCommitted, true // what the decision's batch does
	}
	rec := st.snapshot(recCommit)
	st.logged = true
	c.mu.Unlock()
	var offsets []broker.TopicPosition
	if fused != nil {
		pos, err := c.dlog.(*brokerDecisionLog).commitDecided(context.WithoutCancel(ctx), dc, fused.xid, rec)
		if errors.Is(err, errNotWritten) {
			c.mu.Lock()
			fused.bs.state, fused.bs.commitSent = BranchActive, false
			c.mu.Unlock()
			code := decisionRefusedCode(err)
			if errors.Is(err, broker.ErrBackpressure) {
				code = "broker_busy"
			}
			c.log.Warn("commit decision not written: global transaction rolled back", "id", st.id, "gtrid", st.gtrid, "err", err)
			return t.rollbackLocked(ctx, &Reason{Code: code, Message: "the commit decision could not be logged: " + err.Error()}),
				fmt.Errorf("%w: decision log: %w", ErrRolledBack, err)
		} else if err != nil {
			// Unknown whether the batch (the decision and the broker branch's commit) is on
			// disk: leave every prepared branch for the recovery of the next start.
			c.mu.Lock()
			// Not commitSent: recovery must not take the decision as durable before a
			// restart reads the log back (commitDecided, recovery_indoubt.go).
			fused.bs.state, fused.bs.commitSent = BranchActive, false
			st.status, st.code, st.message = StatusInDoubt, CodeDecisionLogFailed, err.Error()
			c.mu.Unlock()
			for _, b := range worked {
				b.broken = true
			}
			c.log.Error("commit decision could not be logged; branches left prepared for recovery at restart", "gtrid", st.gtrid, "err", err)
			return t.finish(), fmt.Errorf("%w: decision log: %v", ErrInDoubt, err)
		}
		offsets = pos
	} else if len(second) > 0 {
		if err := c.dlog.appendSync(ctx, rec); errors.Is(err, errNotWritten) {
			// Nothing of the decision was written: nothing committed anywhere, so the
			// transaction rolls back (presumed abort covers a rollback record that cannot be
			// written either).
			c.log.Warn("commit decision not written: global transaction rolled back", "id", st.id, "gtrid", st.gtrid, "err", err)
			return t.rollbackLocked(ctx, &Reason{Code: decisionRefusedCode(err), Message: "the commit decision could not be logged: " + err.Error()}),
				fmt.Errorf("%w: decision log: %w", ErrRolledBack, err)
		} else if err != nil {
			// Whether the decision reached the disk is unknown: leave every branch prepared
			// for the recovery of the next start, which reads the log back.
			c.mu.Lock()
			st.status, st.code, st.message = StatusInDoubt, CodeDecisionLogFailed, err.Error()
			c.mu.Unlock()
			for _, b := range second {
				b.broken = true
			}
			c.log.Error("commit decision could not be logged; branches left prepared for recovery once the log is read back", "gtrid", st.gtrid, "err", err)
			return t.finish(), fmt.Errorf("%w: decision log: %v", ErrInDoubt, err)
		}
	} else {
		c.dlog.append(rec)
	}
	c.metrics.observePhase("decide", decideBegan)
	if c.hookAfterDecision != nil {
		if err := c.hookAfterDecision(st.gtrid); err != nil {
			return t.abandon(), err
		}
	}

	p2Began := time.Now()
	pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.PhaseTimeout)
	defer pcancel()
	heuristic := false
	commitBranch := func(b *Branch) {
		c.mu.Lock()
		sentBefore := b.bs.commitSent
		b.bs.commitSent = true
		c.mu.Unlock()
		pos, err := b.conn.commit(pctx, false)
		code := XACode(err)
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case err == nil:
			b.bs.state = BranchCommitted
			offsets = append(offsets, pos...)
		case code == XAERNota && sentBefore:
			b.bs.state = BranchCommitted
		case code == XAERNota || code == XAHeurRB || code == XAHeurMix || isRollbackCode(code):
			b.bs.state = BranchHeuristic
			heuristic = true
			c.log.Error("prepared branch vanished before its commit: heuristic hazard", "gtrid", st.gtrid, "resource", b.rm.Name(), "err", err)
		case code == XAHeurCom:
			b.bs.state = BranchCommitted
		default:
			b.broken = true // detach it; recovery commits it
			c.log.Warn("phase-2 commit failed; recovery retries", "gtrid", st.gtrid, "resource", b.rm.Name(), "err", err)
		}
	}
	// The branches commit in parallel, the last one on this goroutine.
	inParallel(len(second), func(k int) { commitBranch(second[k]) })
	c.metrics.observePhase("commit", p2Began)
	c.mu.Lock()
	st.offsets = offsets
	done := true
	for _, bs := range st.branches {
		if bs.state == BranchPrepared || bs.state == BranchActive {
			done = false
		}
	}
	var err error
	switch {
	case heuristic:
		st.status, st.code, st.message = StatusInDoubt, "heuristic_hazard", "a prepared branch was finished by someone else before its commit"
		c.appendLog(st, recInDoubt, false)
		err = fmt.Errorf("%w: %s", ErrInDoubt, st.message)
	case done:
		st.status, st.finished, st.finishedMono = StatusCommitted, c.opts.Now(), c.opts.Elapsed()
		c.appendLog(st, recDone, false)
	}
	c.mu.Unlock()
	return t.finish(), err
}

// decisionRefusedCode is the rollback code of a commit decision the log certainly did not write:
// conflicting_decision when the log holds a rollback decision for the transaction already (the
// first decision wins, declog_first.go: the log is fine), decision_log_failed otherwise.
func decisionRefusedCode(err error) string {
	if errors.Is(err, ErrConflictingDecision) {
		return "conflicting_decision"
	}
	return CodeDecisionLogFailed
}

// inParallel runs f(0), …, f(n-1) at once, f(n-1) on the calling goroutine (one goroutine
// fewer to start and one hand-off fewer to wait for), and returns when all have returned. The
// others run on helper goroutines (runHelped).
func inParallel(n int, f func(k int)) {
	var wg sync.WaitGroup
	for k := range n - 1 {
		wg.Add(1)
		runHelped(func() {
			defer wg.Done()
			f(k)
		})
	}
	if n > 0 {
		f(n - 1)
	}
	wg.Wait()
}

// Helper goroutines of inParallel. A branch's call goes deep into its driver: on a new
// goroutine its stack grows (is copied) two or three times on every call, a few percent of the
// coordinator's CPU. A helper is kept after its call while calls keep coming, its grown stack
// with it; one idle for helperIdle ends.
var helperWork = make(chan func()) // unbuffered: a send succeeds only to an idle helper

const helperIdle = 10 * time.Second

// runHelped runs f on an idle helper goroutine, or on a new one.
func runHelped(f func()) {
	select {
	case helperWork <- f:
	default:
		go helper(f)
	}
}

func helper(f func()) {
	f()
	idle := time.NewTimer(helperIdle)
	defer idle.Stop()
	for {
		select {
		case f := <-helperWork:
			f()
			idle.Reset(helperIdle)
		case <-idle.C:
			return
		}
	}
}

// fusedBrokerBranch returns the broker branch among worked when its commit can carry the
// commit decision: the decision log is the broker's commit log and the broker resource is that
// same broker (in process). The caller holds t.mu.
func (c *Coordinator) fusedBrokerBranch(worked []*Branch) (*Branch, decidedCommitter) {
	l, ok := c.dlog.(*brokerDecisionLog)
	if !ok {
		return nil, nil
	}
	lb, ok := l.b.(*broker.Broker)
	if !ok {
		return nil, nil
	}
	for _, b := range worked {
		rm, ok := b.rm.(*brokerRM)
		if !ok {
			continue
		}
		if bb, ok := rm.b.(*broker.Broker); !ok || bb != lb {
			return nil, nil
		}
		if _, ok := b.conn.(*brokerBranch); !ok {
			return nil, nil
		}
		return b, lb
	}
	return nil, nil
}
