package client

import (
	"context"
	"errors"
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
