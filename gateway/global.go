package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/xa"
)

// This file holds the global transactions endpoints (docs/http-api.md, "Global transactions"):
// one call runs named operations on MySQL/MariaDB and PostgreSQL resources and publishes
// messages, all inside one global transaction of the XA coordinator (package xa), committed
// with two-phase commit or rolled back everywhere.
//
//	POST /v1/global-transactions               run it (200 committed, 409 rolled_back)
//	GET  /v1/global-transactions/{id}          status
//	GET  /v1/global-transactions?status=&limit= list (in_doubt ones, for an operator; with
//	                                            counts by status, order=newest, resolved=)
//	POST /v1/global-transactions/{id}/resolve  an operator's decision on an in_doubt one
//
// Outcomes: a nil error from the coordinator means the commit is decided and durable (status
// committed, or committing while recovery finishes phase 2 of a branch): 200. A rollback,
// for whatever reason (a step affecting the wrong number of rows, a database error, the
// timeout, a failed prepare) is 409 with status rolled_back and the reason as error; an
// in_doubt outcome (a branch finished against the decision) is 409 with status in_doubt. A
// repeat of a client id answers the first outcome with "duplicate": true.

// Coordinator is what the gateway needs of the XA coordinator (*xa.Coordinator).
type Coordinator interface {
	Run(ctx context.Context, opts xa.BeginOptions, fn func(ctx context.Context, tx *xa.GlobalTx) error) (xa.TxInfo, error)
	Get(id string) (xa.TxInfo, error)
	Query(q xa.ListQuery) xa.ListResult
	Resolve(ctx context.Context, id string, d xa.Decision, by string) (xa.TxInfo, error)
	Driver(resource string) (string, error)
	Ping(ctx context.Context) error
}

var _ Coordinator = (*xa.Coordinator)(nil)

// errNoCoordinator: the server runs without a coordinator (Options.Coordinator nil).
var errNoCoordinator = errors.New("global transactions are not enabled on this server")

// globalState is the server's part for global transactions.
type globalState struct {
	c   Coordinator
	ops *xa.Operations
}

// newGlobalState checks the compiled operations (xa.CompileOperations) against the
// coordinator's resources.
func newGlobalState(c Coordinator, ops *xa.Operations) (*globalState, error) {
	if c == nil {
		if ops.Len() > 0 {
			return nil, errors.New("operations are configured but there is no coordinator")
		}
		return nil, nil
	}
	if err := ops.Check(c.Driver); err != nil {
		return nil, err
	}
	return &globalState{c: c, ops: ops}, nil
}

// globalErrorFor maps the coordinator's errors (errors.go calls it), or returns nil.
func globalErrorFor(err error) *apiError {
	msg := err.Error()
	switch {
	case errors.Is(err, errNoCoordinator):
		return newError(http.StatusServiceUnavailable, api.CodeNotReady, "%s; the coordinator did not start (see the server log)", msg)
	case errors.Is(err, xa.ErrIDReused):
		return &apiError{status: http.StatusConflict, code: api.CodeIdempotencyKeyReused, field: "id",
			message: msg + " (other steps or messages); nothing ran: use a new id for new work, the same body for a retry"}
	case errors.Is(err, xa.ErrInvalidID):
		return &apiError{status: http.StatusBadRequest, code: api.CodeInvalidField, field: "id",
			message: "id " + msg + "; use 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', ':' and '-'"}
	case errors.Is(err, xa.ErrNotFound):
		return newError(http.StatusNotFound, api.CodeUnknownTransaction, "%s; finished transactions are forgotten after the retention period", msg)
	case errors.Is(err, xa.ErrNotInDoubt):
		return newError(http.StatusConflict, api.CodeNotInDoubt, "%s; only an in_doubt transaction takes an operator's decision", msg)
	case errors.Is(err, xa.ErrUnknownResource):
		return newError(http.StatusBadRequest, api.CodeUnknownResource, "%s; resources are configured under resources", msg)
	case errors.Is(err, xa.ErrClosed):
		return newError(http.StatusServiceUnavailable, api.CodeUnavailable, "%s; the server is shutting down, retry against a running one", msg)
	}
	return nil
}

func (s *Server) globalTx() (*globalState, error) {
	if s.global == nil {
		return nil, errNoCoordinator
	}
	return s.global, nil
}

// handleGlobalTx runs one global transaction: POST /v1/global-transactions.
func (s *Server) handleGlobalTx(w http.ResponseWriter, r *http.Request) error {
	g, err := s.globalTx()
	if err != nil {
		return err
	}
	bp, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	req, err := decodeGlobalRequest(*bp, g.ops, g.c.Driver)
	putBuf(bp) // the decoded request copies what it keeps
	if err != nil {
		return err
	}
	if err := s.authorizeTopics(w, req.msgs); err != nil {
		return err
	}
	if err := s.checkTopics(req.msgs); err != nil {
		return err
	}
	rows := make([]int64, len(req.steps))
	last := lastSteps(req)
	var digest string
	if req.id != "" {
		digest = globalDigest(req)
	}
	info, err := g.c.Run(r.Context(), xa.BeginOptions{ID: req.id, Timeout: time.Duration(req.timeoutMS) * time.Millisecond, Digest: digest},
		func(ctx context.Context, tx *xa.GlobalTx) error {
			for i, st := range req.steps {
				run := st.op.Run
				if last[i] {
					run = st.op.RunPrepare
				}
				n, err := run(ctx, tx, i, st.args)
				if err != nil {
					return err
				}
				rows[i] = n
			}
			if len(req.msgs) == 0 {
				return nil
			}
			if err := tx.Publish(ctx, req.msgs...); err != nil {
				return publishReason(err)
			}
			return nil
		})
	var dup *xa.DuplicateError
	switch {
	case err == nil:
		res := resultOf(info)
		for _, n := range rows {
			res.Steps = append(res.Steps, api.GlobalTxStepResult{RowsAffected: n})
		}
		return writeJSON(w, http.StatusOK, res)
	case errors.As(err, &dup):
		res := resultOf(dup.Info)
		res.Duplicate = true
		if dup.Info.DecisionUnknown() {
			return s.writeDecisionUnknown(w, r, res)
		}
		return writeJSON(w, outcomeStatus(dup.Info.Status), res)
	case errors.Is(err, xa.ErrRolledBack), errors.Is(err, xa.ErrInDoubt), errors.Is(err, xa.ErrTimedOut):
		if info.ID == "" {
			return err
		}
		if info.DecisionUnknown() {
			return s.writeDecisionUnknown(w, r, resultOf(info))
		}
		res := resultOf(info)
		if res.Error == nil {
			code, msg := "rolled_back", err.Error()
			if errors.Is(err, xa.ErrInDoubt) {
				code = "in_doubt"
			}
			res.Error = &api.Error{Code: code, Message: msg}
		}
		return writeJSON(w, http.StatusConflict, res)
	}
	return err
}

// writeDecisionUnknown answers 503 outcome_unknown (with Retry-After in a cluster) for a
// transaction whose decision may or may not be durable, keeping its id, gtrid and status.
func (s *Server) writeDecisionUnknown(w http.ResponseWriter, r *http.Request, res api.GlobalTxResult) error {
	msg := "whether the commit decision of global transaction " + res.ID + " is durable is unknown"
	if res.Error != nil && res.Error.Message != "" {
		msg += " (" + res.Error.Message + ")"
	}
	msg += "; it is settled by recovery (after a restart, or on the new leader in a cluster): retry with the same id to learn the outcome, never with a new one"
	res.Error = &api.Error{Code: api.CodeOutcomeUnknown, Message: msg}
	if s.cluster != nil {
		w.Header().Set("Retry-After", "1")
	}
	return writeJSON(w, http.StatusServiceUnavailable, res)
}

// lastSteps marks the steps after which their branch may prepare at once (Operation.RunPrepare:
// the statement and the PREPARE in one round trip where the driver allows it): the last step on
// its resource, in a transaction that commits in two phases (work on two resources or more,
// counting the messages' broker branch, or a client id). A transaction on one resource commits
// in one phase, which a prepared branch cannot.
func lastSteps(req globalRequest) []bool {
	last := make([]bool, len(req.steps))
	seen := map[string]bool{}
	for i := len(req.steps) - 1; i >= 0; i-- {
		r := req.steps[i].op.Resource()
		last[i] = !seen[r]
		seen[r] = true
	}
	branches := len(seen)
	if len(req.msgs) > 0 {
		branches++
	}
	if branches < 2 && req.id == "" {
		return make([]bool, len(req.steps))
	}
	return last
}

// globalStep is a decoded step: its operation and bound values.
type globalStep struct {
	op   *xa.Operation
	args []any
}

func publishReason(err error) error {
	if errors.Is(err, xa.ErrTimedOut) {
		return err
	}
	return &xa.Reason{Code: "publish_failed", Message: fmt.Sprintf("messages could not be added to the broker's branch: %v", err)}
}

// outcomeStatus is the HTTP status of a finished transaction's outcome.
func outcomeStatus(s xa.Status) int {
	if s == xa.StatusCommitted || s == xa.StatusCommitting {
		return http.StatusOK
	}
	return http.StatusConflict
}

func resultOf(in xa.TxInfo) api.GlobalTxResult {
	res := api.GlobalTxResult{ID: in.ID, Gtrid: in.Gtrid, Status: string(in.Status), Offsets: positions(in.Offsets)}
	if in.Code != "" && in.Status != xa.StatusCommitted && in.Status != xa.StatusCommitting {
		res.Error = &api.Error{Code: in.Code, Message: in.Message}
	}
	return res
}

// positions is positionsJSON, but nil (no "offsets" in the answer) when there are none.
func positions(ps []broker.TopicPosition) []api.TopicPosition {
	if len(ps) == 0 {
		return nil
	}
	return positionsJSON(ps)
}

func globalTxJSON(in xa.TxInfo) api.GlobalTx {
	out := api.GlobalTx{ID: in.ID, Gtrid: in.Gtrid, Status: string(in.Status), Branches: []api.GlobalTxBranch{},
		CreatedAt: formatTimestamp(in.Created), DecidedAt: optTime(in.Decided), FinishedAt: optTime(in.Finished),
		Deadline: formatTimestamp(in.Deadline), ResolvedBy: in.ResolvedBy, Offsets: positions(in.Offsets)}
	for _, b := range in.Branches {
		out.Branches = append(out.Branches, api.GlobalTxBranch{Resource: b.Resource, State: string(b.State), Xid: xidJSON(b.Xid)})
	}
	if in.Code != "" {
		out.Error = &api.Error{Code: in.Code, Message: in.Message}
	}
	return out
}

// checkTopics answers 404 for a message to an unknown topic (creating it instead when
// auto_create_topics is on) and 404 for a partition the topic does not have, before anything
// runs.
func (s *Server) checkTopics(msgs []broker.TxMessage) error {
	var info broker.TopicInfo
	for i := range msgs {
		m := &msgs[i]
		if i == 0 || m.Topic != msgs[i-1].Topic {
			var err error
			if info, err = s.messageTopic(m.Topic, i); err != nil {
				return err
			}
		}
		if m.Partition >= len(info.Partitions) {
			return &apiError{status: http.StatusNotFound, code: api.CodeUnknownPartition, field: msgField(i, "partition"),
				message: fmt.Sprintf("topic %q has %d partitions; messages[%d].partition %d does not exist", m.Topic, len(info.Partitions), i, m.Partition)}
		}
	}
	return nil
}

// messageTopic describes the topic of message i, creating it when it is unknown and the
// server auto-creates topics (404 unknown_topic otherwise).
func (s *Server) messageTopic(topic string, i int) (broker.TopicInfo, error) {
	info, err := s.b.Topic(topic)
	if errors.Is(err, broker.ErrUnknownTopic) && s.opts.AutoCreateTopics {
		if err := s.autoCreateTopic(topic); err != nil {
			return info, err
		}
		info, err = s.b.Topic(topic)
	}
	if errors.Is(err, broker.ErrUnknownTopic) {
		ae := unknownTopicError(topic)
		ae.field = msgField(i, "topic")
		return info, ae
	}
	return info, err
}

// handleGetGlobalTx answers GET /v1/global-transactions/{id}.
func (s *Server) handleGetGlobalTx(w http.ResponseWriter, r *http.Request) error {
	g, err := s.globalTx()
	if err != nil {
		return err
	}
	in, err := g.c.Get(chi.URLParam(r, "id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, globalTxJSON(in))
}

var globalStatuses = []xa.Status{xa.StatusActive, xa.StatusPreparing, xa.StatusCommitting, xa.StatusCommitted,
	xa.StatusRollingBack, xa.StatusRolledBack, xa.StatusInDoubt}

// handleListGlobalTx answers GET /v1/global-transactions?status=in_doubt&limit=100: the
// first limit of the matching transactions, oldest first (order=newest: newest first);
// resolved=true keeps those an operator resolved, resolved=false the others. counts has every
// retained transaction by status whatever the filters, total how many matched, truncated
// whether limit cut the list: a client shows totals and the newest few without downloading
// everything.
func (s *Server) handleListGlobalTx(w http.ResponseWriter, r *http.Request) error {
	g, err := s.globalTx()
	if err != nil {
		return err
	}
	q := r.URL.Query()
	lq := xa.ListQuery{Status: xa.Status(q.Get("status")), Limit: 100}
	if lq.Status != "" {
		ok := false
		for _, st := range globalStatuses {
			ok = ok || st == lq.Status
		}
		if !ok {
			return paramError("status", "%q is not a status: use active, preparing, committing, committed, rolling_back, rolled_back or in_doubt", lq.Status)
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return paramError("limit", "must be an integer from 1 to 10000, not %q", v)
		}
		lq.Limit = n
	}
	switch v := q.Get("order"); v {
	case "", "oldest":
	case "newest":
		lq.Newest = true
	default:
		return paramError("order", "must be oldest (the default) or newest, not %q", v)
	}
	if v := q.Get("resolved"); v != "" {
		if v != "true" && v != "false" {
			return paramError("resolved", "must be true (only those an operator resolved) or false (the others), not %q", v)
		}
		resolved := v == "true"
		lq.Resolved = &resolved
	}
	res := g.c.Query(lq)
	out := api.GlobalTxList{Transactions: make([]api.GlobalTx, 0, len(res.Transactions)),
		Counts: make(map[string]int, len(globalStatuses)), Total: res.Matched, Truncated: res.Matched > len(res.Transactions)}
	for _, in := range res.Transactions {
		out.Transactions = append(out.Transactions, globalTxJSON(in))
	}
	for _, st := range globalStatuses {
		out.Counts[string(st)] = res.Counts[st]
	}
	return writeJSON(w, http.StatusOK, out)
}

// handleResolveGlobalTx records an operator's decision on an in_doubt transaction:
// POST /v1/global-transactions/{id}/resolve {"decision": "commit" | "rollback"} (admin).
// Who (the token's name, the operator field, the client's address: in a cluster, the one a
// follower that forwarded the request vouched for, cluster_client.go) and when are logged and
// kept in the decision log.
func (s *Server) handleResolveGlobalTx(w http.ResponseWriter, r *http.Request) error {
	g, err := s.globalTx()
	if err != nil {
		return err
	}
	bp, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	req, err := decodeResolveRequest(*bp)
	putBuf(bp)
	if err != nil {
		return err
	}
	id := chi.URLParam(r, "id")
	by := operatorName(w)
	if req.Operator != "" {
		by += " (operator " + req.Operator + ")"
	}
	by += " from " + s.clientAddr(r)
	in, err := g.c.Resolve(r.Context(), id, xa.Decision(req.Decision), by)
	if err != nil {
		return err
	}
	s.log.Warn("global transaction resolved over HTTP", "id", id, "gtrid", in.Gtrid, "decision", req.Decision,
		"by", by, "at", formatTimestamp(time.Now()))
	return writeJSON(w, http.StatusOK, globalTxJSON(in))
}
