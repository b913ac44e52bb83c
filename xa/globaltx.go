package xa

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/imagomq/imago/broker"
)

// BeginOptions configure one global transaction.
type BeginOptions struct {
	// ID is an optional client id (1–128 characters of [A-Za-z0-9._:-]) that makes the
	// transaction idempotent: Begin with an id already known returns a *DuplicateError with
	// the first attempt's outcome.
	ID string
	// Timeout rolls the transaction back if it has not decided by then. 0: Options.DefaultTimeout.
	Timeout time.Duration
	// Digest, when set with ID, names the work the caller will do under ID (the gateway's hash
	// of the steps and messages). A repeat of ID with another digest gets ErrIDReused instead
	// of the first attempt's outcome, which would answer for work that never ran. The
	// coordinator keeps the digest's SHA-256 in every decision record of the transaction, so
	// the check holds after a restart and on a cluster's new leader too. A transaction whose
	// records hold no digest (begun without one, or recorded by a version before digests were
	// logged) has an unknown digest: a repeat of its id is answered as a duplicate whatever
	// its digest.
	Digest string
}

// digestOf is what the coordinator keeps of a BeginOptions.Digest: its SHA-256, digestLen
// bytes whatever the caller's digest is, so every decision record has room for it; "" for none.
func digestOf(d string) string {
	if d == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(d))
	return string(sum[:])
}

// DuplicateError is Begin's answer to a client id that is already known: Info is the first
// attempt's outcome (Begin waited for it to settle).
type DuplicateError struct{ Info TxInfo }

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("global transaction %q already ran: %s", e.Info.ID, e.Info.Status)
}

// Reason is an error with a code, which Rollback and Run keep as the transaction's reason
// (returned to repeats of its client id). Any other error is kept with the code "aborted".
type Reason struct{ Code, Message string }

func (r *Reason) Error() string { return r.Code + ": " + r.Message }

func validClientID(id string) error {
	if len(id) == 0 || len(id) > maxClientIDLen {
		return fmt.Errorf("%w: must be 1 to %d characters", ErrInvalidID, maxClientIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return fmt.Errorf("%w: %q holds a character other than letters, digits and . _ : -", ErrInvalidID, id)
		}
	}
	return nil
}

// GlobalTx is one global transaction. Its methods are safe for concurrent use but run one at
// a time.
type GlobalTx struct {
	c        *Coordinator
	st       *txState
	deadline time.Time
	timeout  time.Duration
	timer    *time.Timer

	mu       sync.Mutex
	active   bool
	branches map[string]*Branch
	order    []*Branch
	// preparingQueued: the "preparing" record was queued (markPreparing).
	preparingQueued bool
	// The statements' context (stmtCtx): sctx is parent bounded by the deadline, kept for the
	// next statement under the same parent (the usual case: Run passes one context to every
	// step and to Commit); sctxCancel is called when it is replaced and at finish.
	sctx, sctxParent context.Context
	sctxCancel       context.CancelFunc
}

// Branch is a resource's branch of a global transaction. For an SQL resource, its first
// statement starts the branch (XA START / BEGIN) on a connection that stays pinned until
// phase 2; close the rows of a Query before the next statement.
type Branch struct {
	tx     *GlobalTx
	rm     resourceManager
	xid    Xid
	conn   branchConn
	work   bool
	broken bool // the connection failed mid-branch: it cannot commit
	// prepared: ExecPrepare prepared the branch with its last statement (or may have: the
	// round trip failed); it takes no more statements and commits in two phases.
	prepared bool
	bs       *branchState
}

// Begin opens a global transaction.
func (c *Coordinator) Begin(ctx context.Context, opts BeginOptions) (*GlobalTx, error) {
	if opts.ID != "" {
		if err := validClientID(opts.ID); err != nil {
			return nil, err
		}
	}
	timeout := opts.Timeout
	switch {
	case timeout == 0:
		timeout = c.opts.DefaultTimeout
	case timeout < 0 || timeout > c.opts.MaxTimeout:
		return nil, fmt.Errorf("timeout must be between 1ms and %s, got %s", c.opts.MaxTimeout, timeout)
	}
	now := c.opts.Now()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	// Client ids and gtrids are two namespaces that Get and Resolve both accept: a client id
	// naming another transaction's gtrid is refused (it must not be taken for that
	// transaction's repeat), and a gtrid is never one of the known client ids.
	if other, ok := c.txs[opts.ID]; ok && opts.ID != "" && other.clientID != opts.ID {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %q is the gtrid of another global transaction", ErrInvalidID, opts.ID)
	}
	var gtrid string
	for gtrid == "" || c.byID[gtrid] != nil || c.txs[gtrid] != nil {
		var raw [txIDLen / 2]byte
		if _, err := rand.Read(raw[:]); err != nil {
			c.mu.Unlock()
			return nil, fmt.Errorf("global transaction id: %w", err)
		}
		gtrid = c.node + hex.EncodeToString(raw[:])
	}
	var digest string
	if opts.ID != "" {
		digest = digestOf(opts.Digest)
	}
	if prev, ok := c.byID[opts.ID]; ok && opts.ID != "" {
		if digest != "" && prev.digest != "" && digest != prev.digest {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: %q", ErrIDReused, opts.ID)
		}
		c.mu.Unlock()
		select {
		case <-prev.settled:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		c.mu.Lock()
		in := prev.info()
		c.mu.Unlock()
		return nil, &DuplicateError{Info: in}
	}
	st := &txState{id: gtrid, gtrid: gtrid, clientID: opts.ID, digest: digest, status: StatusActive, created: now,
		deadline: now.Add(timeout), live: true, settled: make(chan struct{})}
	if opts.ID != "" {
		st.id = opts.ID
	}
	c.txs[gtrid] = st
	c.byID[st.id] = st
	c.mu.Unlock()
	t := &GlobalTx{c: c, st: st, deadline: st.deadline, timeout: timeout, active: true, branches: map[string]*Branch{}}
	// expire takes t.mu: holding it here orders the timer's store before a timer that fires
	// at once reads it (finish stops it).
	t.mu.Lock()
	t.timer = time.AfterFunc(timeout, t.expire)
	t.mu.Unlock()
	return t, nil
}

// ID is the transaction's id: its client id, or its gtrid.
func (t *GlobalTx) ID() string { return t.st.id }

// Gtrid is the global transaction id inside every branch's Xid.
func (t *GlobalTx) Gtrid() string { return t.st.gtrid }

// Deadline is when the transaction times out unless decided.
func (t *GlobalTx) Deadline() time.Time { return t.deadline }

// Info describes the transaction now.
func (t *GlobalTx) Info() TxInfo {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	return t.st.info()
}

func (t *GlobalTx) setStatus(s Status) {
	t.c.mu.Lock()
	t.st.status = s
	t.c.mu.Unlock()
}

// errInactive is the error for a call on a transaction that ended.
func (t *GlobalTx) errInactive() error {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	if t.st.code == "timed_out" {
		return ErrTimedOut
	}
	return fmt.Errorf("%w: %s is %s", ErrNotActive, t.st.id, t.st.status)
}

// Enlist returns the transaction's branch on a resource (the same one on every call).
func (t *GlobalTx) Enlist(ctx context.Context, resource string) (*Branch, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.enlistLocked(resource)
}

func (t *GlobalTx) enlistLocked(resource string) (*Branch, error) {
	if !t.active {
		return nil, t.errInactive()
	}
	if b, ok := t.branches[resource]; ok {
		return b, nil
	}
	rm, ok := t.c.rms[resource]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownResource, resource)
	}
	b := &Branch{tx: t, rm: rm, xid: makeXid(t.st.gtrid, resource)}
	t.branches[resource] = b
	t.order = append(t.order, b)
	return b, nil
}

// stmtCtx bounds a statement by the transaction's deadline. The context is shared by the
// statements run under the same ctx (one timer, not one per statement) and lives until the
// transaction finishes or a statement comes with another ctx; the returned cancel is a no-op.
// The caller holds t.mu.
func (t *GlobalTx) stmtCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if t.sctx != nil && t.sctxParent == ctx {
		return t.sctx, noCancel
	}
	if t.sctxCancel != nil {
		t.sctxCancel()
	}
	t.sctx, t.sctxCancel = context.WithDeadline(ctx, t.deadline)
	t.sctxParent = ctx
	return t.sctx, noCancel
}

func noCancel() {}

// start starts the branch on first use. The caller holds t.mu.
func (b *Branch) start(ctx context.Context) error {
	if b.conn != nil {
		return nil
	}
	if b.broken {
		return &Error{Code: XAERRMFail, Resource: b.rm.Name(), Op: "start", Err: errors.New("the branch's connection failed earlier")}
	}
	conn, err := b.rm.start(ctx, b.xid, time.Until(b.tx.deadline))
	if err != nil {
		return err
	}
	b.conn = conn
	b.tx.c.mu.Lock()
	b.bs = &branchState{resource: b.rm.Name(), state: BranchActive}
	b.tx.st.branches = append(b.tx.st.branches, b.bs)
	b.tx.c.mu.Unlock()
	return nil
}

// Resource is the branch's resource name; Driver its driver ("mysql", "postgres", "broker").
func (b *Branch) Resource() string { return b.rm.Name() }

// Driver is "mysql", "postgres" or "broker".
func (b *Branch) Driver() string { return b.rm.Driver() }

// Xid is the branch's Xid.
func (b *Branch) Xid() Xid { return b.xid }

// startSQL starts an SQL branch on first use and marks that it has work.
func (b *Branch) startSQL(ctx context.Context) error {
	if !b.tx.active {
		return b.tx.errInactive()
	}
	if b.rm.Driver() == "broker" {
		return notSQL(b.rm.Name())
	}
	if b.prepared {
		return &Error{Code: XAERProto, Resource: b.rm.Name(), Op: "exec", Err: errors.New("the branch was prepared with its last statement (ExecPrepare); it takes no more")}
	}
	if err := b.start(ctx); err != nil {
		return err
	}
	b.work = true
	return nil
}

func (b *Branch) sqlConn(ctx context.Context) (*sql.Conn, error) {
	if err := b.startSQL(ctx); err != nil {
		return nil, err
	}
	conn, err := b.conn.db(ctx)
	if err != nil {
		return nil, b.noteErr(ctx, err)
	}
	return conn, nil
}

// noteErr marks the branch broken when err means its connection is gone.
func (b *Branch) noteErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) || ctx.Err() != nil || XACode(classify("", "", err)) == XAERRMFail {
		b.broken = true
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && !time.Now().Before(b.tx.deadline) {
		return fmt.Errorf("%w: %v", ErrTimedOut, err)
	}
	return classify(b.rm.Name(), "exec", err)
}

// Exec runs a statement in the branch and returns the rows it affected.
func (b *Branch) Exec(ctx context.Context, query string, args ...any) (int64, error) {
	t := b.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	sctx, cancel := t.stmtCtx(ctx)
	defer cancel()
	if err := b.startSQL(sctx); err != nil {
		return 0, err
	}
	n, err := b.conn.exec(sctx, query, args)
	if err != nil {
		return 0, b.noteErr(sctx, err)
	}
	return n, nil
}

// Query runs a query in the branch. Close the rows before the next statement.
func (b *Branch) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	t := b.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	// The rows outlive this call, so the deadline is not attached to ctx here; the
	// transaction's timer still rolls the transaction back at its deadline.
	conn, err := b.sqlConn(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := conn.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, b.noteErr(ctx, err)
	}
	return rows, nil
}

// QueryRow runs a query that returns one row, scanned into dest.
func (b *Branch) QueryRow(ctx context.Context, query string, args []any, dest ...any) error {
	t := b.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	sctx, cancel := t.stmtCtx(ctx)
	defer cancel()
	conn, err := b.sqlConn(sctx)
	if err != nil {
		return err
	}
	if err := conn.QueryRowContext(sctx, query, args...).Scan(dest...); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return b.noteErr(sctx, err)
	}
	return nil
}

// Publish adds messages to the broker's branch. They become visible when the transaction
// commits, all at once, and never if it rolls back.
func (t *GlobalTx) Publish(ctx context.Context, msgs ...broker.TxMessage) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.c.brokerN == "" {
		return ErrNoBroker
	}
	b, err := t.enlistLocked(t.c.brokerN)
	if err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := b.start(ctx); err != nil {
		return err
	}
	if err := b.conn.publish(msgs); err != nil {
		return err
	}
	b.work = true
	return nil
}

// expire is the timeout: a transaction still active at its deadline is rolled back.
func (t *GlobalTx) expire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.active {
		return
	}
	t.c.log.Info("global transaction timed out", "id", t.st.id, "gtrid", t.st.gtrid)
	t.c.metrics.timeouts.Inc()
	t.rollbackLocked(context.Background(), &Reason{Code: "timed_out", Message: fmt.Sprintf("no decision within %s", t.timeout)})
}

// Rollback rolls the transaction back. reason (optional) is kept as its Code and Message.
func (t *GlobalTx) Rollback(ctx context.Context, reason error) (TxInfo, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.active {
		return t.Info(), t.errInactive()
	}
	if reason == nil {
		reason = &Reason{Code: "rolled_back", Message: "rolled back by the application"}
	}
	return t.rollbackLocked(ctx, reason), nil
}

func reasonOf(err error) (code, msg string) {
	var r *Reason
	if errors.As(err, &r) {
		return r.Code, r.Message
	}
	if errors.Is(err, ErrTimedOut) {
		return "timed_out", err.Error()
	}
	return "aborted", err.Error()
}

// rollbackLocked rolls back every started branch on its pinned connection. A branch whose
// rollback fails is left to recovery (the rollback decision is in the log when any branch may
// be prepared). The caller holds t.mu.
func (t *GlobalTx) rollbackLocked(ctx context.Context, reason error) TxInfo {
	began := time.Now()
	t.active = false
	c := t.c
	code, msg := reasonOf(reason)
	c.mu.Lock()
	st := t.st
	st.status, st.code, st.message = StatusRollingBack, code, msg
	if st.decided.IsZero() {
		st.decided = c.opts.Now()
	}
	mustLog := st.logged
	prepared := false
	for _, b := range t.order {
		prepared = prepared || b.bs != nil && b.bs.state == BranchPrepared
	}
	var rec record
	if prepared {
		rec = st.snapshot(recRollback)
		st.logged, mustLog = true, true
	} else if mustLog {
		c.appendLog(st, recRollback, false)
	}
	c.mu.Unlock()
	if prepared {
		// A branch may be prepared: the rollback decision is durable before any branch is
		// rolled back (the log then refuses a later commit for this gtrid). A log that refuses
		// it because it has failed takes no decision until a restart, which presumes abort for
		// this transaction: no commit can ever be recorded for it, so the rollback goes on. A
		// log that holds a different decision wins: nothing is rolled back.
		err := c.dlog.appendSync(ctx, rec)
		if errors.Is(err, ErrConflictingDecision) {
			c.mu.Lock()
			st.status, st.code, st.message = StatusInDoubt, "conflicting_decision", err.Error()
			c.mu.Unlock()
			for _, b := range t.order {
				b.broken = true // prepared branches stay so, for recovery and the operator
			}
			c.log.Error("rollback refused by the decision log; branches left as they are", "gtrid", st.gtrid, "err", err)
			return t.finish()
		}
		if err != nil {
			c.log.Warn("rollback decision not recorded (the decision log failed); rolling back, as a restart would presume abort", "gtrid", st.gtrid, "err", err)
		}
	}

	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.PhaseTimeout)
	defer cancel()
	allDone := true
	var todo []*Branch
	for _, b := range t.order {
		if b.conn != nil && b.bs != nil && b.bs.state != BranchReadOnly && b.bs.state != BranchRolledBack {
			todo = append(todo, b)
		}
	}
	// The branches roll back in parallel, the last one on this goroutine.
	inParallel(len(todo), func(k int) {
		b := todo[k]
		err := b.conn.rollback(pctx)
		code := XACode(err)
		switch {
		case err == nil || code == XAERNota || isRollbackCode(code):
			c.setBranch(b.bs, BranchRolledBack)
		case b.bs.state == BranchPrepared:
			// Still prepared: recovery rolls it back (the decision is logged). The session
			// is not pooled again: a prepared branch still attached to it would answer
			// recovery's rollback from another session with XAER_NOTA.
			c.log.Warn("rollback of a prepared branch failed; recovery retries", "gtrid", st.gtrid, "resource", b.rm.Name(), "err", err)
			b.broken = true
			c.mu.Lock()
			allDone = false
			c.mu.Unlock()
		default:
			// Never prepared: dropping the connection rolls it back on the server.
			b.broken = true
			c.setBranch(b.bs, BranchRolledBack)
		}
	})
	c.mu.Lock()
	if allDone {
		st.status, st.finished, st.finishedMono = StatusRolledBack, c.opts.Now(), c.opts.Elapsed()
		if mustLog || st.clientID != "" {
			c.appendLog(st, recDone, false)
		}
	} else if !st.logged {
		c.appendLog(st, recRollback, false)
	}
	c.mu.Unlock()
	c.metrics.observePhase("rollback", began)
	return t.finish()
}

func (c *Coordinator) setBranch(bs *branchState, s BranchState) {
	c.mu.Lock()
	bs.state = s
	c.mu.Unlock()
}

// finish releases every connection and hands the transaction over to recovery (if not
// final). The caller holds t.mu.
func (t *GlobalTx) finish() TxInfo {
	t.active = false
	t.timer.Stop()
	if t.sctxCancel != nil {
		t.sctxCancel()
		t.sctx, t.sctxParent, t.sctxCancel = nil, nil, nil
	}
	for _, b := range t.order {
		if b.conn != nil {
			b.conn.release(b.broken)
		}
	}
	c := t.c
	c.mu.Lock()
	st := t.st
	st.live = false
	st.quiet = c.scanSeq.Add(1) // recovery settles it only from scans begun after this
	in := st.info()
	close(st.settled)
	pending := !st.status.Final() && st.status != StatusInDoubt
	c.mu.Unlock()
	c.metrics.outcome(in.Status)
	if pending {
		c.kickRecovery()
	}
	return in
}

// Commit commits the transaction: in one phase when only one branch has work and the
// transaction has no client id, else in two. It returns the outcome and nil once the commit
// is decided (Status committed, or committing when a branch waits for recovery to finish
// phase 2); an error wrapping ErrRolledBack (the cause inside) when it rolled back; an error
// wrapping ErrInDoubt when a branch's outcome contradicts the decision.
func (t *GlobalTx) Commit(ctx context.Context) (TxInfo, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.active {
		return t.Info(), t.errInactive()
	}
	c := t.c
	var worked []*Branch
	for _, b := range t.order {
		if b.conn != nil {
			if b.broken {
				err := &Error{Code: XAERRMFail, Resource: b.rm.Name(), Op: "commit", Err: errors.New("the branch's connection failed during the transaction")}
				return t.rollbackLocked(ctx, &Reason{Code: "branch_failed", Message: err.Error()}), fmt.Errorf("%w: %v", ErrRolledBack, err)
			}
			worked = append(worked, b) // a branch is started by its first statement or message
		}
	}
	if time.Now().After(t.deadline) {
		c.metrics.timeouts.Inc()
		return t.rollbackLocked(ctx, &Reason{Code: "timed_out", Message: "the transaction passed its timeout before commit"}), fmt.Errorf("%w: %w", ErrRolledBack, ErrTimedOut)
	}
	switch {
	case len(worked) == 0:
		c.mu.Lock()
		t.st.status, t.st.decided, t.st.finished = StatusCommitted, c.opts.Now(), c.opts.Now()
		t.st.finishedMono = c.opts.Elapsed()
		if t.st.clientID != "" {
			c.appendLog(t.st, recDone, false)
		}
		c.mu.Unlock()
		return t.finish(), nil
	case len(worked) == 1 && t.st.clientID == "" && !worked[0].prepared:
		return t.commitOnePhase(ctx, worked[0])
	}
	return t.commitTwoPhase(ctx, worked)
}

// commitOnePhase commits the one branch with work in one phase. That commit is the decision:
// like phase 2 it is bounded by its own PhaseTimeout, and neither the caller's context (an
// HTTP client that went away) nor the transaction's deadline (checked before, by Commit) can
// cancel it half-way; cancelling it would make its outcome unknown (PostgreSQL rolls a
// cancelled COMMIT back, MariaDB usually completes it) for nothing.
func (t *GlobalTx) commitOnePhase(ctx context.Context, b *Branch) (TxInfo, error) {
	c := t.c
	began := time.Now()
	t.setStatus(StatusCommitting)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opts.PhaseTimeout)
	defer cancel()
	pos, err := b.conn.commit(pctx, true)
	c.metrics.observePhase("one_phase", began)
	if errors.Is(err, broker.ErrBackpressure) {
		// The broker refused the commit before writing anything and kept the branch idle:
		// roll it back, which makes the outcome a rollback (nothing published).
		if rerr := b.conn.rollback(pctx); rerr != nil {
			c.log.Warn("rollback of a broker branch refused under back-pressure failed; the broker's branch timeout rolls it back", "gtrid", t.st.gtrid, "err", rerr)
		}
		c.mu.Lock()
		st := t.st
		st.decided = c.opts.Now()
		st.status, st.finished, st.code, st.message = StatusRolledBack, st.decided, "broker_busy", "the broker refused the commit under back-pressure: "+err.Error()
		b.bs.state = BranchRolledBack
		c.mu.Unlock()
		return t.finish(), fmt.Errorf("%w: %w", ErrRolledBack, err)
	}
	c.mu.Lock()
	st := t.st
	st.decided = c.opts.Now()
	if err == nil {
		st.status, st.finished, st.offsets = StatusCommitted, st.decided, pos
		b.bs.state = BranchCommitted
		c.mu.Unlock()
		return t.finish(), nil
	}
	code := XACode(err)
	if isRollbackCode(code) || code == XAERNota || code == XAERProto || code == XAERInval {
		st.status, st.finished, st.code, st.message = StatusRolledBack, st.decided, "commit_failed", err.Error()
		b.bs.state = BranchRolledBack
		c.mu.Unlock()
		b.broken = true
		return t.finish(), fmt.Errorf("%w: %w", ErrRolledBack, err)
	}
	// The connection failed during a one-phase commit: the branch is committed or rolled
	// back and no resource can say which (it was never prepared).
	st.status, st.code, st.message = StatusInDoubt, "heuristic_hazard", "one-phase commit failed mid-way: "+err.Error()
	b.bs.state = BranchHeuristic
	c.appendLog(st, recInDoubt, false)
	c.mu.Unlock()
	b.broken = true
	c.log.Error("one-phase commit outcome unknown; transaction in doubt", "id", st.id, "gtrid", st.gtrid, "resource", b.rm.Name(), "err", err)
	return t.finish(), fmt.Errorf("%w: %v", ErrInDoubt, err)
}

// abandon leaves the transaction as a crash would (test hooks only): connections dropped,
// branches prepared, state as logged; recovery ignores it until the coordinator is reopened.
func (t *GlobalTx) abandon() TxInfo {
	for _, b := range t.order {
		b.broken = true
	}
	t.c.mu.Lock()
	t.st.abandoned = true
	t.c.mu.Unlock()
	return t.finish()
}

// Run is a whole transaction in one call (what the HTTP API needs): Begin, fn, then Commit
// when fn returns nil or Rollback (keeping fn's error as the reason, see Reason) when it does
// not. A repeat of a known client id does not call fn: it returns the first outcome and a
// *DuplicateError. The error is nil exactly when the outcome is a commit decision.
func (c *Coordinator) Run(ctx context.Context, opts BeginOptions, fn func(ctx context.Context, tx *GlobalTx) error) (TxInfo, error) {
	tx, err := c.Begin(ctx, opts)
	if err != nil {
		var dup *DuplicateError
		if errors.As(err, &dup) {
			return dup.Info, err
		}
		return TxInfo{}, err
	}
	if ferr := fn(ctx, tx); ferr != nil {
		in, rerr := tx.Rollback(ctx, ferr)
		if rerr != nil { // it ended already (timed out)
			return in, fmt.Errorf("%w: %w", ErrRolledBack, rerr)
		}
		return in, fmt.Errorf("%w: %w", ErrRolledBack, ferr)
	}
	return tx.Commit(ctx)
}
