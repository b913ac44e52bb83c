package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"testing"
)

// TestDeadLetterFailureKeepsBothCauses: when a message fails and storing its dead letter
// fails for good too, the *HandlerError wraps both errors: the handler's, and the server's
// answer to the dead letter (here 403, injected by a fake server, as a token without the
// produce right on the dead-letter topic would get).
func TestDeadLetterFailureKeepsBothCauses(t *testing.T) {
	c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/v1/topics/pay":
			w.Write([]byte(`{"name":"pay","partitions":[{"partition":0,"start_offset":0,"end_offset":1,"bytes":10}]}`))
		case r.Method == http.MethodPut && r.URL.Path == "/v1/topics/pay.DLQ":
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte(`{"name":"pay.DLQ","partitions":[{"partition":0,"start_offset":0,"end_offset":0,"bytes":0}]}`))
		case r.Method == http.MethodPost && r.URL.Path == "/v1/topics/pay.DLQ/messages":
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error":{"code":"forbidden","message":"token \"c\" lacks the produce right on topic \"pay.DLQ\""}}`))
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
			w.WriteHeader(http.StatusNotFound)
		}
	})
	handlerErr := errors.New("ledger row locked")
	rec := &recoverer{c: c, group: "g", policy: RetryPolicy{Attempts: 1}, deadLetter: true,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	err := rec.deliver(context.Background(), FetchedMessage{Topic: "pay", Partition: 0, Offset: 0, Value: []byte(`1`)},
		func(context.Context) error { return handlerErr })
	var he *HandlerError
	if !errors.As(err, &he) || !errors.Is(err, handlerErr) || !IsStatus(err, http.StatusForbidden) {
		t.Fatalf("deliver: %v; want a *HandlerError wrapping the handler's error and the 403 of the dead letter", err)
	}
}
