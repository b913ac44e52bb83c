package xa

import (
	"fmt"
	"log/slog"
)

// The first decision wins. Every decision log (the file, the table, the broker's commit log)
// refuses a record that decides a transaction otherwise than the decision it already holds for
// that gtrid: a rollback after a commit, a commit after a rollback (presumed abort included), a
// "done" whose outcome differs from the decision. On one node the coordinator never tries such
// a thing; the rule is what keeps a second coordinator, or a new leader reading the same log,
// from committing one branch of a transaction whose other branch was rolled back. The check
// runs in the log's writer, against what the log holds and what the same batch decided before,
// so two decisions racing into one batch are ordered too. A refused record is answered
// ErrConflictingDecision (nothing written; the log stays usable) and logged as an error.
//
// An operator's resolve (recResolve) of an in_doubt transaction is exempt: it is the decision
// an operator takes, knowing the hazard, and later records follow it. Records dropped by
// compaction or by the table's retention (finished transactions past Options.Retention) no
// longer constrain anything: recovery forgets such a transaction only after every resource
// showed none of its branches.

// decision is the outcome a record decides: decideNone, decideCommit or decideAbort.
type decision int8

const (
	decideNone   decision = 0
	decideCommit decision = 1
	decideAbort  decision = -1
)

func (d decision) String() string {
	switch d {
	case decideCommit:
		return "commit"
	case decideAbort:
		return "rollback"
	}
	return "none"
}

// decisionOf is the decision r records. An in_doubt record carries the commit decision when a
// commit was sent to one of its branches (which happens only once the commit decision is
// durable); otherwise (a one-phase commit cut mid-way, a decision write of unknown outcome) it
// decides nothing.
func decisionOf(r *record) decision {
	switch r.Kind {
	case recCommit:
		return decideCommit
	case recRollback:
		return decideAbort
	case recPreparing:
		return decideNone
	}
	switch r.Status {
	case StatusCommitting, StatusCommitted:
		return decideCommit
	case StatusRollingBack, StatusRolledBack:
		return decideAbort
	case StatusInDoubt:
		for _, b := range r.Branches {
			if b.CommitSent {
				return decideCommit
			}
		}
	}
	return decideNone
}

// firstDecisionWins returns the requests of batch that the log may write, in order, and answers
// the others ErrConflictingDecision. held is the last record per gtrid the log holds (the
// writer's own map). Only the writer goroutine calls it.
func firstDecisionWins(batch []*logReq, held map[string]record, log *slog.Logger, where []any) []*logReq {
	var pending map[string]decision // decided earlier in this batch
	kept := batch[:0]
	for _, req := range batch {
		r := &req.rec
		d := decisionOf(r)
		if d == decideNone {
			kept = append(kept, req)
			continue
		}
		prev, ok := pending[r.Gtrid]
		if !ok {
			if h, found := held[r.Gtrid]; found {
				prev = decisionOf(&h)
			}
		}
		if r.Kind != recResolve && prev != decideNone && prev != d {
			err := notWritten(fmt.Errorf("%w: gtrid %s is decided %s; a %s record (status %s, code %q) was refused",
				ErrConflictingDecision, r.Gtrid, prev, d, r.Status, r.Code))
			log.Error("decision log: a conflicting decision was refused; the first decision stands",
				append(append([]any{}, where...), "gtrid", r.Gtrid, "decided", prev.String(), "refused", d.String(), "status", string(r.Status), "code", r.Code)...)
			if req.done != nil {
				req.done <- err
			}
			continue
		}
		if pending == nil {
			pending = map[string]decision{}
		}
		pending[r.Gtrid] = d
		kept = append(kept, req)
	}
	return kept
}
