package textproto

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/imagomq/imago/broker"
)

// Answer codes (docs/protocol.md, "Answers"); they follow HTTP.
const (
	codeOK              = 200
	codeBadRequest      = 400
	codeUnauthorized    = 401
	codeForbidden       = 403
	codeNotFound        = 404
	codeConflict        = 409
	codeTooLarge        = 413
	codeOutOfRange      = 416
	codeInternal        = 500
	codeUnavailable     = 503
	answerTrailer       = "\r\n"
	maxAnswerHeaderSize = 48
)

// appendResult appends "result <code> <len> <opaque>\r\n<text>\r\n".
func appendResult(dst []byte, code int, opaque int64, text string) []byte {
	dst = appendResultHead(dst, code, len(text), opaque)
	dst = append(dst, text...)
	return append(dst, answerTrailer...)
}

// appendPutResult appends the 200 answer of a put: "<partition> <offset>". It formats the
// text on the stack: it runs for every put.
func appendPutResult(dst []byte, opaque int64, partition int, offset int64) []byte {
	var tb [48]byte
	text := strconv.AppendInt(tb[:0], int64(partition), 10)
	text = append(text, ' ')
	text = strconv.AppendInt(text, offset, 10)
	dst = appendResultHead(dst, codeOK, len(text), opaque)
	dst = append(dst, text...)
	return append(dst, answerTrailer...)
}

// appendResultHead appends the header line of a result answer: "result <code> <len> <opaque>\r\n".
func appendResultHead(dst []byte, code, textLen int, opaque int64) []byte {
	dst = append(dst, "result "...)
	dst = strconv.AppendInt(dst, int64(code), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(textLen), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, opaque, 10)
	return append(dst, "\r\n"...)
}

// failure is an answer code and text for an error.
type failure struct {
	code int
	text string
}

func (f *failure) Error() string { return strconv.Itoa(f.code) + " " + f.text }

func fail(code int, format string, args ...any) *failure {
	return &failure{code: code, text: fmt.Sprintf(format, args...)}
}

// failureFor maps any error to its answer. It is the one place where broker errors become
// answer codes, with the same meanings as the HTTP door's statuses.
func failureFor(err error) *failure {
	var f *failure
	if errors.As(err, &f) {
		return f
	}
	var le *errLine
	if errors.As(err, &le) {
		return &failure{code: codeBadRequest, text: le.msg}
	}
	var re *broker.OffsetRangeError
	if errors.As(err, &re) {
		return fail(codeOutOfRange, "offset %d is outside the partition's range [%d, %d]; get from the start offset %d or the end offset %d",
			re.Offset, re.StartOffset, re.EndOffset, re.StartOffset, re.EndOffset)
	}
	var xe *broker.XAError
	if errors.As(err, &xe) {
		code := codeConflict
		switch xe.Code {
		case broker.XAERNota:
			code = codeNotFound
		case broker.XAERInval:
			code = codeBadRequest
		case broker.XAERRMFail:
			code = codeUnavailable
		}
		return &failure{code: code, text: xe.Code + " " + xe.Message}
	}
	msg := err.Error()
	switch {
	case errors.Is(err, broker.ErrUnknownTopic):
		return fail(codeNotFound, "%s; create the topic first (imago topics create, or PUT /v1/topics/{topic})", msg)
	case errors.Is(err, broker.ErrUnknownPartition):
		return fail(codeNotFound, "%s; stats offsets lists the partitions", msg)
	case errors.Is(err, broker.ErrInvalidName):
		return fail(codeBadRequest, "%s: use 1 to 249 characters from A-Z, a-z, 0-9, '.', '_' and '-'", msg)
	case errors.Is(err, broker.ErrInvalidArgument):
		return fail(codeBadRequest, "%s", msg)
	case errors.Is(err, broker.ErrOffsetOutOfRange):
		return fail(codeOutOfRange, "%s", msg)
	case errors.Is(err, broker.ErrMessageTooLarge):
		return fail(codeTooLarge, "%s; split the payload or raise the broker's max message size", msg)
	case errors.Is(err, broker.ErrBackpressure):
		return fail(codeUnavailable, "%s; retry shortly", msg)
	case errors.Is(err, broker.ErrNotLeader):
		return fail(codeUnavailable, "%s: this door does not forward; connect to the leader's (GET /v1/cluster names it)", msg)
	case errors.Is(err, broker.ErrOutcomeUnknown):
		// The text door has no idempotency key: a put sent again after this answer is a new
		// put, stored a second time if the first one was. Say so, and how to find out.
		return fail(codeUnavailable, "%s; a put sent again may be stored twice (the text protocol has no idempotency key): "+
			"get the partition to see whether it is there first, or produce over HTTP with an Idempotency-Key, which is safe to retry", msg)
	case errors.Is(err, broker.ErrClosed):
		return fail(codeUnavailable, "%s; the server is shutting down, retry against a running one", msg)
	case errors.Is(err, broker.ErrCorrupt):
		return fail(codeInternal, "%s; the operator must check the broker's logs", msg)
	case errors.Is(err, broker.ErrTxNotFound):
		return fail(codeNotFound, "%s; BEGIN answers the txkey to use", msg)
	case errors.Is(err, broker.ErrTxTimedOut), errors.Is(err, broker.ErrTxState):
		return fail(codeConflict, "%s", msg)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fail(codeUnavailable, "the request was canceled before it finished; retry it")
	}
	return fail(codeInternal, "internal error; the operator can find details in the server log")
}
