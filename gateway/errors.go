package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/groups"
	"github.com/imagomq/imago/offsetdb"
)

// apiError is an error with its HTTP status and API error code. Handlers return it for
// problems they detect themselves; errorFor turns every other error into one.
type apiError struct {
	status  int
	code    string
	message string
	field   string // request field or parameter at fault, when there is one
	// set for offset_out_of_range
	rangeErr *broker.OffsetRangeError
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func newError(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// fieldError reports a request body field of the wrong type or value (400 invalid_field).
func fieldError(field, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: api.CodeInvalidField, field: field,
		message: field + " " + fmt.Sprintf(format, args...)}
}

// paramError reports a bad path or query parameter (400 invalid_parameter).
func paramError(param, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, code: api.CodeInvalidParameter, field: param,
		message: param + " " + fmt.Sprintf(format, args...)}
}

func invalidNameError(what, name string) *apiError {
	return newError(http.StatusBadRequest, api.CodeInvalidName,
		"%s name %q is invalid: use 1 to 249 characters from A-Z, a-z, 0-9, '.', '_' and '-'", what, name)
}

func unknownTopicError(topic string) *apiError {
	return newError(http.StatusNotFound, api.CodeUnknownTopic,
		"topic %q does not exist; create it with PUT /v1/topics/%s", topic, topic)
}

// errorFor maps any error to its status and code. It is the one place where broker
// sentinel errors become HTTP statuses (docs/http-api.md, "General").
func errorFor(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return newError(http.StatusRequestEntityTooLarge, api.CodePayloadTooLarge,
			"the request body is larger than the limit of %d bytes; send fewer or smaller messages per request", mbe.Limit)
	}
	var re *broker.OffsetRangeError
	if errors.As(err, &re) {
		return &apiError{status: http.StatusRequestedRangeNotSatisfiable, code: api.CodeOffsetOutOfRange, rangeErr: re,
			message: fmt.Sprintf("offset %d is outside the partition's range [%d, %d]; fetch from start_offset or end_offset",
				re.Offset, re.StartOffset, re.EndOffset)}
	}
	var xe *broker.XAError
	if errors.As(err, &xe) {
		return newError(xaStatus(xe.Code), xe.Code, "%s", xe.Message)
	}
	if ae := globalErrorFor(err); ae != nil {
		return ae
	}
	if ae := groupErrorFor(err); ae != nil {
		return ae
	}
	msg := err.Error()
	switch {
	case errors.Is(err, broker.ErrTxNotFound):
		return newError(http.StatusNotFound, api.CodeUnknownTransaction, "%s; begin one with POST /v1/transactions", msg)
	case errors.Is(err, broker.ErrTxTimedOut):
		return newError(http.StatusConflict, api.CodeTransactionTimedOut, "%s; begin a new transaction and send its messages again", msg)
	case errors.Is(err, broker.ErrTxState):
		return newError(http.StatusConflict, api.CodeTransactionNotOpen, "%s; GET /v1/transactions/{id} shows its state", msg)
	case errors.Is(err, broker.ErrUnknownTopic):
		return newError(http.StatusNotFound, api.CodeUnknownTopic, "%s; create the topic with PUT /v1/topics/{topic}", msg)
	case errors.Is(err, broker.ErrUnknownPartition):
		return newError(http.StatusNotFound, api.CodeUnknownPartition, "%s; GET /v1/topics/{topic} lists the partitions", msg)
	case errors.Is(err, broker.ErrTopicExists):
		return newError(http.StatusConflict, api.CodeTopicExists, "%s; GET /v1/topics/{topic} shows its configuration", msg)
	case errors.Is(err, broker.ErrInvalidName):
		return newError(http.StatusBadRequest, api.CodeInvalidName, "%s: use 1 to 249 characters from A-Z, a-z, 0-9, '.', '_' and '-'", msg)
	case errors.Is(err, broker.ErrInvalidArgument):
		return newError(http.StatusBadRequest, api.CodeInvalidArgument, "%s", msg)
	case errors.Is(err, broker.ErrOffsetOutOfRange):
		return newError(http.StatusRequestedRangeNotSatisfiable, api.CodeOffsetOutOfRange, "%s", msg)
	case errors.Is(err, broker.ErrMessageTooLarge):
		return newError(http.StatusRequestEntityTooLarge, api.CodeMessageTooLarge, "%s; split the payload or raise the broker's max message size", msg)
	case errors.Is(err, broker.ErrBackpressure):
		return newError(http.StatusTooManyRequests, api.CodeBackpressure, "%s; retry after the Retry-After delay", msg)
	case errors.Is(err, broker.ErrIdempotencyReused):
		return newError(http.StatusConflict, api.CodeIdempotencyKeyReused,
			"%s; use a new Idempotency-Key for a different request", msg)
	case errors.Is(err, broker.ErrNotLeader):
		return newError(http.StatusServiceUnavailable, api.CodeNoLeader,
			"%s: leadership changed while the request was handled; nothing was done, retry after Retry-After", msg)
	case errors.Is(err, broker.ErrNotInCluster):
		return newError(http.StatusNotImplemented, api.CodeNotInCluster, "%s", msg)
	case errors.Is(err, broker.ErrOutcomeUnknown) && errors.Is(err, broker.ErrStorage):
		// A single node whose write failed and that could not record where the restart cuts
		// the log: only the restart can tell.
		return newError(http.StatusServiceUnavailable, api.CodeOutcomeUnknown,
			"%s; it may have been stored: retry only with the same Idempotency-Key, after the server restarted", msg)
	case errors.Is(err, broker.ErrOutcomeUnknown):
		// In a cluster: the leader lost its leadership after proposing the write. The next
		// leader knows what was committed as soon as it serves; no restart is needed.
		return newError(http.StatusServiceUnavailable, api.CodeOutcomeUnknown,
			"%s; retry only with the same Idempotency-Key, after Retry-After: the retry answers the first outcome "+
				"(sent again without the key, it is stored twice if the first attempt was)", msg)
	case errors.Is(err, broker.ErrStorage):
		return newError(http.StatusServiceUnavailable, api.CodeStorageFailed,
			"%s; the request was not stored; the broker accepts writes again after a restart (see /readyz)", msg)
	case errors.Is(err, broker.ErrClosed):
		return newError(http.StatusServiceUnavailable, api.CodeUnavailable, "%s; the server is shutting down, retry against a running one", msg)
	case errors.Is(err, broker.ErrCorrupt):
		return newError(http.StatusInternalServerError, api.CodeCorruptRecord, "%s; the operator must check the broker's logs", msg)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return newError(http.StatusServiceUnavailable, api.CodeCanceled, "the request was canceled before it finished; retry it")
	}
	return newError(http.StatusInternalServerError, api.CodeInternalError, "internal error; the operator can find details in the server log")
}

// groupErrorFor maps the consumer-group coordinator's errors (package groups), or returns nil.
func groupErrorFor(err error) *apiError {
	var oe *groups.OwnerError
	if errors.As(err, &oe) {
		return &apiError{status: http.StatusConflict, code: api.CodeNotPartitionOwner, field: fmt.Sprintf("offsets[%d]", oe.Index),
			message: oe.Error() + "; a member may commit only the partitions assigned to it"}
	}
	var se *groups.StoreError
	if errors.As(err, &se) && !errors.Is(err, offsetdb.ErrInvalidOffset) {
		return newError(http.StatusServiceUnavailable, api.CodeOffsetStoreUnavailable,
			"could not %s in the offset store; retry later (the cause is in the server log)", se.Op)
	}
	var fe *groups.FieldError
	if errors.As(err, &fe) {
		return fieldError(fe.Field, "%s", fe.Message)
	}
	msg := err.Error()
	switch {
	case errors.Is(err, errGroupsNotEnabled):
		return newError(http.StatusServiceUnavailable, api.CodeNotReady, "%s; configure offsets.store and restart", msg)
	case errors.Is(err, groups.ErrUnknownMember):
		return newError(http.StatusNotFound, api.CodeUnknownMember, "%s; join again with POST /v1/groups/{group}/members", msg)
	case errors.Is(err, groups.ErrUnknownGroup):
		return newError(http.StatusNotFound, api.CodeUnknownGroup, "%s; GET /v1/groups lists the groups", msg)
	case errors.Is(err, groups.ErrModeConflict):
		return newError(http.StatusConflict, api.CodeGroupModeConflict, "%s; join with the group's mode or use another group name", msg)
	case errors.Is(err, groups.ErrTopicsConflict):
		return newError(http.StatusConflict, api.CodeGroupTopicsConflict, "%s; every member of a clustered group subscribes the same topics", msg)
	case errors.Is(err, offsetdb.ErrInvalidOffset):
		return newError(http.StatusBadRequest, api.CodeInvalidField, "%s", msg)
	case errors.Is(err, offsetdb.ErrClosed):
		return newError(http.StatusServiceUnavailable, api.CodeUnavailable, "%s; the server is shutting down, retry against a running one", msg)
	}
	return nil
}

// xaStatus is the HTTP status of an XA error code (docs/http-api.md, "XA resource").
func xaStatus(code string) int {
	switch code {
	case broker.XAERNota:
		return http.StatusNotFound
	case broker.XAERInval:
		return http.StatusBadRequest
	case broker.XAERRMFail:
		return http.StatusServiceUnavailable
	case broker.XAERProto, broker.XAERDupID, broker.XARBRollback, broker.XARBTimeout,
		broker.XAHeurCom, broker.XAHeurRB, broker.XAHeurHaz, broker.XAHeurMix:
		return http.StatusConflict
	}
	return http.StatusInternalServerError // XAER_RMERR and any code not listed
}

// writeError writes err as the JSON error body with its status.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := errorFor(err)
	if ae.code == api.CodeNotInCluster {
		ae = newError(ae.status, ae.code, "%s %s is not available on a cluster member yet (%s); docs/cluster.md lists what is",
			r.Method, r.URL.Path, err)
	}
	switch {
	case ae.code == api.CodeNoLeader: // routine while a cluster elects a leader
		s.log.Debug("request refused: no leader", "method", r.Method, "path", r.URL.Path, "err", err)
	case ae.status >= 500:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", ae.status, "err", err)
	}
	body := api.ErrorResponse{Error: api.Error{Code: ae.code, Message: ae.message, Field: ae.field}}
	if ae.rangeErr != nil {
		body.StartOffset = &ae.rangeErr.StartOffset
		body.EndOffset = &ae.rangeErr.EndOffset
	}
	h := w.Header()
	h.Del("Content-Length")
	h["Content-Type"] = jsonContentType
	h["X-Content-Type-Options"] = nosniff
	switch {
	case ae.code == api.CodeNoLeader, ae.code == api.CodeOutcomeUnknown && s.cluster != nil:
		h.Set("Retry-After", "1")
	}
	switch ae.status {
	case http.StatusTooManyRequests:
		h.Set("Retry-After", "1")
	case http.StatusUnauthorized:
		h.Set("WWW-Authenticate", `Bearer realm="imago"`)
	}
	b, mErr := json.Marshal(body)
	if mErr != nil { // cannot happen with these types
		s.log.Error("encode error body", "err", mErr)
		b = []byte(`{"error":{"code":"internal_error","message":"internal error"}}`)
	}
	w.WriteHeader(ae.status)
	w.Write(append(b, '\n'))
}

var (
	jsonContentType = []string{"application/json"}
	nosniff         = []string{"nosniff"}
)
