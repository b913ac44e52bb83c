package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/imagomq/imago/api"
)

// Error is an answer of the server other than 2xx. Code is the API's stable snake_case code
// (api.CodeUnknownTopic, api.CodeOffsetOutOfRange, …); branch on it with IsCode and the api
// constants, or errors.As. Retryable tells whether the same request may succeed later.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is error.code of the body, or "http_<status>" when the body was not an API error.
	Code string
	// Message is error.message: a sentence for a person.
	Message string
	// Field, when set, names the request field or parameter at fault.
	Field string
	// StartOffset and EndOffset are set on a 416 (offset out of range).
	StartOffset, EndOffset *int64
	// RetryAfter is the Retry-After of a 429 or 503, when the server sent one.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
	if e.StartOffset != nil && e.EndOffset != nil {
		s += fmt.Sprintf(" (partition holds offsets %d to %d)", *e.StartOffset, *e.EndOffset)
	}
	return s
}

// Retryable reports whether the server's answer says the same request may succeed later
// (api.Retryable: back-pressure, not ready, unavailable, canceled). Only a request that is
// safe to repeat should be repeated: a produce with an Idempotency-Key, a global transaction
// with an id, a read.
func (e *Error) Retryable() bool { return api.Retryable(e.Code) }

// IsCode reports whether err is an *Error with the given code (an api.Code* constant).
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// IsStatus reports whether err is an *Error with the given HTTP status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// MayHaveBeenDone reports whether the failed request of err may have been done by the server,
// so that sending it again (without the same idempotency key) could do it twice: an error
// wrapping ErrOutcomeUnknown, a transport error other than a refused connection (the answer
// may have been lost), a 2xx answer cut off on the way, the server's 503 outcome_unknown, or a
// proxy's 502 or 504. Any other answer of the server is its verdict: nothing was done.
func MayHaveBeenDone(err error) bool {
	return err != nil && (errors.Is(err, ErrOutcomeUnknown) || outcomeUnknown(err))
}

// parseError builds an *Error from a non-2xx response.
func parseError(resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &Error{Status: resp.StatusCode}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if secs, err := strconv.Atoi(ra); err == nil {
			e.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	var parsed api.ErrorResponse
	if json.Unmarshal(body, &parsed) == nil && parsed.Error.Code != "" {
		e.Code = parsed.Error.Code
		e.Message = parsed.Error.Message
		e.Field = parsed.Error.Field
		e.StartOffset, e.EndOffset = parsed.StartOffset, parsed.EndOffset
		return e
	}
	e.Code = "http_" + strconv.Itoa(resp.StatusCode)
	e.Message = strings.TrimSpace(string(body))
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}
