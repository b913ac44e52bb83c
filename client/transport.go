package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"time"

	"github.com/imagomq/imago/api"
)

// This file holds the one place requests are sent: JSON encoding, auth, error decoding, and
// the retry loop for requests that are safe to repeat.

// httpRetry says how often and how patiently a retryable request is repeated.
type httpRetry struct {
	attempts int           // in all, the first included
	min, max time.Duration // backoff bounds
}

var defaultRetry = httpRetry{attempts: 5, min: 50 * time.Millisecond, max: 2 * time.Second}

// request is one API call.
type request struct {
	method, path string
	hdr          http.Header
	in, out      any // JSON body to send, and where to decode a 2xx answer (either may be nil)
	// retry marks the request as safe to send again after a network error, 429 or 503.
	retry bool
}

// get sends a GET, which is always safe to retry.
func (c *Client) get(ctx context.Context, path string, out any) (int, error) {
	return c.send(ctx, request{method: http.MethodGet, path: path, out: out, retry: true})
}

// send sends r, and repeats it when r.retry is set and the failure is one that may pass (a
// network error, 429, 503), with backoff, while attempts and the context's deadline allow.
func (c *Client) send(ctx context.Context, r request) (int, error) {
	var body []byte
	if r.in != nil {
		b, err := json.Marshal(r.in)
		if err != nil {
			return 0, fmt.Errorf("encode request: %w", err)
		}
		body = b
	}
	attempts := 1
	if r.retry {
		attempts = c.retry.attempts
	}
	// unknown is the first failed attempt of a write that may have been done: the answer the
	// retries end with cannot tell what that attempt did (outcome).
	var unknown error
	for n := 1; ; n++ {
		status, err := c.once(ctx, r, body)
		if err != nil && unknown == nil && r.retry && r.method != http.MethodGet && outcomeUnknown(err) {
			unknown = err
		}
		if err == nil || n >= attempts || !retryable(ctx, err) {
			return status, outcome(err, unknown)
		}
		wait := c.retry.backoff(n, err)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return status, outcome(err, unknown) // no time left for another attempt
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return status, outcome(err, unknown)
		case <-t.C:
		}
	}
}

// outcomeUnknown reports whether a failed attempt may have been done: a transport error other
// than a refused connection (the request may have reached the server and its answer been
// lost), a 2xx answer cut off on the way, the server's own 503 outcome_unknown, or a proxy's
// 502 or 504 (proxyGaveUp).
func outcomeUnknown(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Code == api.CodeOutcomeUnknown || proxyGaveUp(e.Status)
	}
	var de *decodeError
	if errors.As(err, &de) {
		return true
	}
	var oe *net.OpError
	return !errors.As(err, &oe) || oe.Op != "dial"
}

// outcome is the error a write's retries end with (last), given the first attempt whose outcome
// is unknown (nil: none). A refusal (429, 503) or a lost answer on the last attempt says nothing
// about that first one, which may have been done: reported as it was, a 429 would tell the
// caller that nothing was stored, and a caller that sends the messages again under a new key
// stores them twice. So the error then wraps ErrOutcomeUnknown and the first attempt's error,
// not the refusal. Any other answer (a 4xx) is the server's verdict on the request as a whole
// (it knows the key) and stands.
func outcome(last, unknown error) error {
	if last == nil || unknown == nil {
		return last
	}
	var e *Error
	if errors.As(last, &e) && !retryable(context.Background(), last) {
		return last
	}
	return &outcomeError{unknown: unknown, last: last}
}

// outcomeError is a write that failed after an attempt whose outcome is unknown (outcome).
type outcomeError struct{ unknown, last error }

func (e *outcomeError) Error() string {
	if e.last == e.unknown {
		return fmt.Sprintf("%v: %v; it may have been done", ErrOutcomeUnknown, e.unknown)
	}
	return fmt.Sprintf("%v: an attempt failed with %v and may have been done; the last retry: %v", ErrOutcomeUnknown, e.unknown, e.last)
}

func (e *outcomeError) Unwrap() []error { return []error{ErrOutcomeUnknown, e.unknown} }

// proxyGaveUp reports whether status is one the server never answers and a proxy or load
// balancer in front of it does when the server's answer did not come: 502 Bad Gateway (the
// connection to it failed, maybe after the request was sent) and 504 Gateway Timeout (the
// request was sent and the answer was late). The request may have been done, as after a
// network error: a keyed write is retried with its key, and what it did is not a refusal.
func proxyGaveUp(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusGatewayTimeout
}

// retryable reports whether err may pass on a second attempt.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Status == http.StatusTooManyRequests || e.Status == http.StatusServiceUnavailable || proxyGaveUp(e.Status)
	}
	var de *decodeError
	if errors.As(err, &de) {
		// A 2xx answer cut off on the way is asked again (the request is safe to repeat);
		// one that arrived whole but cannot be decoded would only come again.
		return de.cut
	}
	return true // a transport error
}

// backoff is the wait before retry n (1 for the first): full jitter over min·2ⁿ⁻¹ capped at
// max, or the server's Retry-After when that is longer.
func (p httpRetry) backoff(n int, err error) time.Duration {
	ceil := p.min << min(n-1, 20)
	if ceil > p.max || ceil <= 0 {
		ceil = p.max
	}
	d := time.Duration(rand.Int64N(int64(ceil)) + 1)
	var e *Error
	if errors.As(err, &e) && e.RetryAfter > d {
		d = e.RetryAfter
	}
	return d
}

// decodeError is a 2xx answer whose body could not be decoded: the server did what was asked,
// but what it answered is lost. cut says the body was cut off (it ended early, or reading it
// failed: a reset connection, a timeout), as opposed to a whole body that is not the JSON
// expected.
type decodeError struct {
	err error
	cut bool
}

func (e *decodeError) Error() string { return e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// once sends r one time.
func (c *Client) once(ctx context.Context, r request, body []byte) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, c.base+r.path, rd)
	if err != nil {
		return 0, err
	}
	for k, v := range r.hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, parseError(resp)
	}
	if r.out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(r.out); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		cut := !errors.As(err, &se) && !errors.As(err, &te)
		return resp.StatusCode, &decodeError{fmt.Errorf("%s %s: decode %d response: %w", r.method, r.path, resp.StatusCode, err), cut}
	}
	return resp.StatusCode, nil
}
