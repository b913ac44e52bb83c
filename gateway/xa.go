package gateway

import (
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
)

// This file holds the XA verbs (/v1/xa/..., docs/http-api.md "XA resource"): the broker as a
// resource manager under javax.transaction.xa.XAResource semantics (the state machine is the
// broker's, broker/tx.go and broker/xa.go). Every verb is a POST whose body names the xid;
// recover is a GET. A successful verb without another result answers {"state": ...}, the
// branch's state after it. Errors carry the XA code as error.code (errors.go maps codes to
// statuses); a body that is not JSON stays invalid_json, so a client tells a broken request
// from an XA answer.

const xidExample = `{"format_id": 1, "gtrid": "<hex>", "bqual": "<hex>"}`

var (
	xaStartSpec = txSpec{xa: true, allowed: tfXid | tfFlags | tfTimeout | tfMessages | tfEnd | tfPrepare, required: tfXid,
		example: `{"xid": ` + xidExample + `, "flags": "noflags"}`}
	xaMessagesSpec = txSpec{xa: true, allowed: tfXid | tfMessages, required: tfXid | tfMessages,
		example: `{"xid": ` + xidExample + `, "messages": [{"topic": "t", "value": ...}]}`}
	xaEndSpec = txSpec{xa: true, allowed: tfXid | tfFlags, required: tfXid | tfFlags,
		example: `{"xid": ` + xidExample + `, "flags": "success"}`}
	xaXidSpec = txSpec{xa: true, allowed: tfXid, required: tfXid,
		example: `{"xid": ` + xidExample + `}`}
	xaCommitSpec = txSpec{xa: true, allowed: tfXid | tfOnePhase, required: tfXid,
		example: `{"xid": ` + xidExample + `, "one_phase": false}`}
	xaHeuristicSpec = txSpec{xa: true, allowed: tfXid | tfDecision, required: tfXid | tfDecision,
		example: `{"xid": ` + xidExample + `, "decision": "commit"}`}
)

// xaBody reads a body that holds no messages (the buffer goes back to the pool at once).
func (s *Server) xaBody(w http.ResponseWriter, r *http.Request, spec txSpec) (txBody, error) {
	body, bp, err := s.readTxBody(w, r, spec)
	if err != nil {
		return body, err
	}
	putBuf(bp)
	return body, nil
}

func xaInval(field, format string, args ...any) *apiError {
	ae := newError(http.StatusBadRequest, broker.XAERInval, format, args...)
	ae.field = field
	return ae
}

// xaCounted counts the outcome an XA error reports, when it ends the branch.
func (s *Server) xaCounted(err error) error {
	var xe *broker.XAError
	if errors.As(err, &xe) && xe.Code == broker.XARBTimeout {
		s.metrics.txEnded(kindXA, outcomeTimedOut) // the broker forgets the branch as it says so
	}
	return err
}

func (s *Server) handleXAStart(w http.ResponseWriter, r *http.Request) error {
	body, bp, err := s.readTxBody(w, r, xaStartSpec)
	if err != nil {
		return err
	}
	defer putBuf(bp) // XAAdd copies the messages
	flags := body.flags
	switch flags {
	case "":
		flags = broker.XANoFlags
	case broker.XANoFlags, broker.XAJoin, broker.XAResume:
	default:
		return xaInval("flags", "flags of start must be noflags, join or resume, not %q", flags)
	}
	compound := body.seen&(tfMessages|tfEnd|tfPrepare) != 0
	if compound {
		if err := checkCompoundStart(flags, body); err != nil {
			return err
		}
		if err := s.authorizeTopics(w, body.msgs); err != nil {
			return err
		}
	}
	if err := s.b.XAStart(body.xid, flags, time.Duration(body.timeoutMS)*time.Millisecond); err != nil {
		return s.xaCounted(err)
	}
	if !compound {
		return writeJSON(w, http.StatusOK, api.XAState{State: api.XAActive})
	}
	return s.finishCompoundStart(w, r, body)
}

// checkCompoundStart validates a start that also carries the branch's work: messages, end and
// prepare, so that a client that knows its whole branch needs two requests (this one and
// commit) instead of five. Only a new branch (noflags) may be compound; prepare needs
// end "success".
func checkCompoundStart(flags string, body txBody) error {
	if flags != broker.XANoFlags {
		return xaInval("flags", "a start with messages, end or prepare must create the branch (flags noflags), not %q", flags)
	}
	switch body.end {
	case "", broker.XASuccess, broker.XAFail, broker.XASuspend:
	default:
		return xaInval("end", "end must be success, fail or suspend, not %q", body.end)
	}
	if body.prepare && body.end != broker.XASuccess {
		return xaInval("prepare", `prepare needs "end": "success" in the same request`)
	}
	return nil
}

// finishCompoundStart runs the rest of a compound start on the branch it created. If a step
// fails the branch is rolled back (nothing of it remains) and the step's error is answered.
func (s *Server) finishCompoundStart(w http.ResponseWriter, r *http.Request, body txBody) error {
	undo := func(err error) error {
		if st, ok := s.b.XAState(body.xid); ok && st == broker.TxOpen {
			_ = s.b.XAEnd(body.xid, broker.XAFail)
		}
		_ = s.b.XARollback(r.Context(), body.xid)
		return s.xaCounted(err)
	}
	if len(body.msgs) > 0 {
		if err := s.addMessages(body.msgs, func() error { return s.b.XAAdd(body.xid, body.msgs) }); err != nil {
			return undo(err)
		}
	}
	if body.end == "" {
		return writeJSON(w, http.StatusOK, api.XAState{State: api.XAActive})
	}
	if err := s.b.XAEnd(body.xid, body.end); err != nil {
		return undo(err)
	}
	if !body.prepare {
		state := map[string]string{broker.XASuccess: api.XAIdle, broker.XAFail: api.XARollbackOnly, broker.XASuspend: api.XASuspended}[body.end]
		return writeJSON(w, http.StatusOK, api.XAState{State: state})
	}
	readOnly, err := s.b.XAPrepare(r.Context(), body.xid)
	if err != nil {
		return undo(err)
	}
	if readOnly {
		s.metrics.txEnded(kindXA, outcomeReadOnly)
		return writeJSON(w, http.StatusOK, api.XAPrepareResponse{Vote: api.XAVoteReadOnly, State: api.XAForgotten})
	}
	return writeJSON(w, http.StatusOK, api.XAPrepareResponse{Vote: api.XAVoteOK, State: api.XAPrepared})
}

func (s *Server) handleXAMessages(w http.ResponseWriter, r *http.Request) error {
	body, bp, err := s.readTxBody(w, r, xaMessagesSpec)
	if err != nil {
		return err
	}
	defer putBuf(bp) // XAAdd copies the messages
	if err := s.authorizeTopics(w, body.msgs); err != nil {
		return err
	}
	if err := s.addMessages(body.msgs, func() error { return s.b.XAAdd(body.xid, body.msgs) }); err != nil {
		return s.xaCounted(err)
	}
	return writeJSON(w, http.StatusOK, api.XAState{State: api.XAActive})
}

func (s *Server) handleXAEnd(w http.ResponseWriter, r *http.Request) error {
	body, err := s.xaBody(w, r, xaEndSpec)
	if err != nil {
		return err
	}
	var state string
	switch body.flags {
	case broker.XASuccess:
		state = api.XAIdle
	case broker.XAFail:
		state = api.XARollbackOnly
	case broker.XASuspend:
		state = api.XASuspended
	default:
		return xaInval("flags", "flags of end must be success, fail or suspend, not %q", body.flags)
	}
	if err := s.b.XAEnd(body.xid, body.flags); err != nil {
		return s.xaCounted(err)
	}
	return writeJSON(w, http.StatusOK, api.XAState{State: state})
}

func (s *Server) handleXAPrepare(w http.ResponseWriter, r *http.Request) error {
	body, err := s.xaBody(w, r, xaXidSpec)
	if err != nil {
		return err
	}
	readOnly, err := s.b.XAPrepare(r.Context(), body.xid)
	if err != nil {
		var xe *broker.XAError
		if errors.As(err, &xe) && xe.Code == broker.XARBRollback {
			s.metrics.txEnded(kindXA, outcomeRolledBack) // rollback-only: rolled back by prepare
		}
		return s.xaCounted(err)
	}
	if readOnly {
		s.metrics.txEnded(kindXA, outcomeReadOnly)
		return writeJSON(w, http.StatusOK, api.XAPrepareResponse{Vote: api.XAVoteReadOnly, State: api.XAForgotten})
	}
	return writeJSON(w, http.StatusOK, api.XAPrepareResponse{Vote: api.XAVoteOK, State: api.XAPrepared})
}

func (s *Server) handleXACommit(w http.ResponseWriter, r *http.Request) error {
	body, err := s.xaBody(w, r, xaCommitSpec)
	if err != nil {
		return err
	}
	pos, err := s.b.XACommit(r.Context(), body.xid, body.onePhase)
	if err != nil {
		var xe *broker.XAError
		if errors.As(err, &xe) && xe.Code == broker.XARBRollback {
			s.metrics.txEnded(kindXA, outcomeRolledBack)
		}
		return s.xaCounted(err)
	}
	s.metrics.txEnded(kindXA, outcomeCommitted)
	return writeJSON(w, http.StatusOK, api.TxCommitResponse{State: api.XACommitted, Offsets: positionsJSON(pos)})
}

func (s *Server) handleXARollback(w http.ResponseWriter, r *http.Request) error {
	body, err := s.xaBody(w, r, xaXidSpec)
	if err != nil {
		return err
	}
	if err := s.b.XARollback(r.Context(), body.xid); err != nil {
		return s.xaCounted(err)
	}
	s.metrics.txEnded(kindXA, outcomeRolledBack)
	return writeJSON(w, http.StatusOK, api.XAState{State: api.XARolledBack})
}

func (s *Server) handleXAForget(w http.ResponseWriter, r *http.Request) error {
	body, err := s.xaBody(w, r, xaXidSpec)
	if err != nil {
		return err
	}
	if err := s.b.XAForget(r.Context(), body.xid); err != nil {
		return s.xaCounted(err)
	}
	return writeJSON(w, http.StatusOK, api.XAState{State: api.XAForgotten})
}

func (s *Server) handleXARecover(w http.ResponseWriter, r *http.Request) error {
	xids := s.b.XARecover()
	out := api.XARecoverResponse{Xids: make([]api.Xid, len(xids))}
	for i, x := range xids {
		out.Xids[i] = xidJSON(x)
	}
	return writeJSON(w, http.StatusOK, out)
}

// handleXAHeuristic is an operator's decision on a prepared branch (admin). It is logged,
// with the token's name, whether it succeeds or not; the broker makes it durable.
func (s *Server) handleXAHeuristic(w http.ResponseWriter, r *http.Request) error {
	body, err := s.xaBody(w, r, xaHeuristicSpec)
	if err != nil {
		return err
	}
	var commit bool
	var state, outcome string
	switch body.decision {
	case api.XADecisionCommit:
		commit, state, outcome = true, api.XAHeurCommitted, outcomeHeurCommit
	case api.XADecisionRollback:
		state, outcome = api.XAHeurRolledBack, outcomeHeurRollback
	default:
		return xaInval("decision", "decision must be commit or rollback, not %q", body.decision)
	}
	by := operatorName(w)
	if err := s.b.XAHeuristic(r.Context(), body.xid, commit); err != nil {
		s.log.Warn("heuristic decision refused", "xid", body.xid.String(), "decision", body.decision, "by", by,
			"remote", s.clientAddr(r), "err", err)
		return s.xaCounted(err)
	}
	s.log.Warn("heuristic decision", "xid", body.xid.String(), "decision", body.decision, "by", by, "remote", s.clientAddr(r))
	s.metrics.txEnded(kindXA, outcome)
	return writeJSON(w, http.StatusOK, api.XAState{State: state})
}

func xidJSON(x broker.Xid) api.Xid {
	return api.Xid{FormatID: x.FormatID, Gtrid: hex.EncodeToString(x.Gtrid), Bqual: hex.EncodeToString(x.Bqual)}
}
