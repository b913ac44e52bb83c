package main

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/imagomq/imago/client"
)

// Exit codes beyond 0 (ok), 1 (failure) and 2 (usage), so that scripts can tell what went
// wrong without reading the message. Documented in `imago --help` (exitCodesHelp).
const (
	exitNotFound    = 3 // 404: unknown topic, group, transaction or xid (XAER_NOTA)
	exitConflict    = 4 // 409: state conflict (XA codes, transaction not open, topic exists otherwise)
	exitUnavailable = 5 // cannot reach the server, timeout, 429, 503, XAER_RMFAIL: try again later
	exitDenied      = 6 // 401 or 403: no token, a wrong token, or a token without the right
)

const exitCodesHelp = `Exit codes (for scripts):
  0  success
  1  failure (any other error: a bad request the server refused, an internal error)
  2  usage: bad flags or arguments, or a configuration that does not validate
  3  not found: unknown topic, group, transaction or xid (HTTP 404, XAER_NOTA)
  4  conflict: the state forbids it (HTTP 409: XA_* and XAER_PROTO/DUPID codes, a transaction
     not open or timed out, a topic that exists with another configuration)
  5  unavailable: the server cannot be reached, timed out, or asks to retry (429, 503,
     XAER_RMFAIL); the same command may succeed later (a produce without --idempotency-key,
     or a tx add, exits 1 instead when running it again could store or add a message twice)
  6  denied: no token, a wrong token, or a token without the right (HTTP 401, 403)`

// exitCodeFor is the exit code of a command's error (not a usage error).
func exitCodeFor(err error) int {
	var ru *rerunUnsafeError
	if errors.As(err, &ru) {
		return exitFailure
	}
	var xe *client.XAError
	if errors.As(err, &xe) {
		switch xe.Code {
		case client.XAERNota:
			return exitNotFound
		case client.XAERRMFail:
			return exitUnavailable
		case client.XAERInval:
			return exitUsage
		}
		if xe.Status == 0 || xe.Status == http.StatusConflict {
			return exitConflict
		}
	}
	var e *client.Error
	if errors.As(err, &e) {
		switch e.Status {
		case http.StatusNotFound:
			return exitNotFound
		case http.StatusConflict:
			return exitConflict
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			return exitUnavailable
		case http.StatusUnauthorized, http.StatusForbidden:
			return exitDenied
		}
		return exitFailure
	}
	// Transport errors of the HTTP client come wrapped in *url.Error; those of the text
	// protocol door in unavailableError. Other network errors (serve's listen) are failures.
	var de *deniedError
	if errors.As(err, &de) {
		return exitDenied
	}
	var ue *url.Error
	var un *unavailableError
	if errors.As(err, &ue) || errors.As(err, &un) || errors.Is(err, context.DeadlineExceeded) {
		return exitUnavailable
	}
	return exitFailure
}

// unavailableError marks an error as "the server could not be reached" (exit 5).
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }
