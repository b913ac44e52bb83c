package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/imagomq/imago/api"
)

// TestErrorCodeAndRetryable: an error answer's code is what IsCode compares with the api
// constants, and Retryable follows api.Codes.
func TestErrorCodeAndRetryable(t *testing.T) {
	for _, tc := range []struct {
		status    int
		code      string
		retryable bool
	}{
		{http.StatusTooManyRequests, api.CodeBackpressure, true},
		{http.StatusServiceUnavailable, api.CodeOffsetStoreUnavailable, true},
		{http.StatusNotFound, api.CodeUnknownTopic, false},
		{http.StatusConflict, api.CodeIdempotencyKeyReused, false},
	} {
		c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(tc.status)
			w.Write([]byte(`{"error":{"code":"` + tc.code + `","message":"injected"}}`))
		})
		_, err := c.DescribeTopic(context.Background(), "t")
		if !IsCode(err, tc.code) || !IsStatus(err, tc.status) {
			t.Fatalf("%s: %v", tc.code, err)
		}
		var e *Error
		if !errors.As(err, &e) || e.Retryable() != tc.retryable {
			t.Errorf("%s: %v, want Retryable() %v", tc.code, err, tc.retryable)
		}
	}
}

// TestMayHaveBeenDone: what a caller may not send again blindly (the request may have been
// done) against the server's verdicts and a connection never made.
func TestMayHaveBeenDone(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"429 backpressure", &Error{Status: http.StatusTooManyRequests, Code: api.CodeBackpressure}, false},
		{"503 not ready", &Error{Status: http.StatusServiceUnavailable, Code: api.CodeNotReady}, false},
		{"503 outcome_unknown", &Error{Status: http.StatusServiceUnavailable, Code: api.CodeOutcomeUnknown}, true},
		{"a proxy's 502", &Error{Status: http.StatusBadGateway, Code: "http_502"}, true},
		{"a proxy's 504", &Error{Status: http.StatusGatewayTimeout, Code: "http_504"}, true},
		{"400", &Error{Status: http.StatusBadRequest, Code: api.CodeInvalidJSON}, false},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, false},
		{"connection reset", &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}, true},
		{"cut 2xx", &decodeError{err: errors.New("unexpected EOF"), cut: true}, true},
		{"wrapped outcome unknown", fmt.Errorf("commit: %w", ErrOutcomeUnknown), true},
	} {
		if got := MayHaveBeenDone(tc.err); got != tc.want {
			t.Errorf("%s: MayHaveBeenDone = %v, want %v", tc.name, got, tc.want)
		}
	}
}
