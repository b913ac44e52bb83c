package xa

import (
	"strconv"
	"time"
)

// Sessions of MySQL/MariaDB branches. MariaDB keeps a prepared branch attached to the session
// that prepared it: while that session exists, XA COMMIT and XA ROLLBACK from any other
// session answer XAER_NOTA (although XA RECOVER lists the branch), so recovery cannot finish
// it. A session outlives its coordinator when the coordinator's host dies or is cut off
// without its TCP connections being closed; the server ends it only after wait_timeout of
// idleness (8 hours by default), the branch's locks held all along.
//
// So XA START sets the session's wait_timeout to a bound that no live branch reaches: the
// transaction's remaining timeout (a branch is idle between statements at most until then),
// plus twice the phase timeout (the commit decision's write and the phase-2 call), plus a
// second. A session of a live transaction is never idle longer; a zombie is gone soon after.
// The setting stays on the pooled connection after the branch (the next branch sets it
// again); an idle pooled connection the server closes meanwhile is replaced by the pool.
//
// Killing the zombie session instead is not possible in general: MariaDB has no view from an
// xid to the session that holds it (performance_schema, off by default, aside). Recovery
// counts every XAER_NOTA of a listed branch as imago_xa_recovery_actions_total{action=
// "held_by_session"} and logs it, so a branch held longer than expected can be alerted on.

// XA START also sets the session's innodb_lock_wait_timeout to the transaction's remaining
// timeout in whole seconds, plus one, so that the coordinator's deadline, not the server's
// lock wait error, ends a wait that crosses it (the answer is timed_out). A statement that
// waits for a row lock past the deadline fails on the coordinator's side, which closes the
// connection, but the server does not look at the socket while a statement waits for a lock:
// without the bound, the session went on waiting for the server's default (50 s), holding the
// rows its earlier statements locked long after the answer said the transaction rolled back,
// and a retry of the same transfer waited behind it. With it, the server ends the wait at
// most one timeout and a second after the deadline (a wait that began just before the
// deadline), a second or two after it when the wait began with the branch.

// mysqlSessionTimeout is the wait_timeout, in whole seconds, set at XA START for a
// transaction with timeout left before its deadline.
func mysqlSessionTimeout(timeout, phase time.Duration) int64 {
	d := timeout + 2*phase + time.Second
	return int64((d + time.Second - 1) / time.Second)
}

// sessionSetup is the statement run before XA START on the branch's session.
func (r *mysqlRM) sessionSetup(timeout time.Duration) string {
	return "SET SESSION wait_timeout = " + strconv.FormatInt(mysqlSessionTimeout(timeout, r.phaseTimeout()), 10) +
		", innodb_lock_wait_timeout = " + strconv.FormatInt(mysqlLockWaitTimeout(timeout), 10)
}

// mysqlLockWaitTimeout is the innodb_lock_wait_timeout, in whole seconds, set at XA START for a
// transaction with timeout left before its deadline: no lock wait of its outlasts it by much.
func mysqlLockWaitTimeout(timeout time.Duration) int64 {
	return max(0, int64((timeout+time.Second-1)/time.Second)) + 1
}

// phaseTimeout is the coordinator's phase timeout (Options.PhaseTimeout), or its default.
func (r *mysqlRM) phaseTimeout() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phase <= 0 {
		return NewOptions("").PhaseTimeout
	}
	return r.phase
}

// setPhaseTimeout is called by Open.
func (r *mysqlRM) setPhaseTimeout(d time.Duration) {
	r.mu.Lock()
	r.phase = d
	r.mu.Unlock()
}
