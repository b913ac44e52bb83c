package gateway

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/fsutil"
)

// A local commit refused for back-pressure leaves the transaction open with its messages (the
// broker puts it back): the 429 must say so, not tell the client it was rolled back and to begin
// it again (a client doing both would commit the transfer twice), and the same id commits once
// the flusher drains.
func TestLocalCommitBackpressureKeepsTransaction(t *testing.T) {
	ts := startServerTuned(t, t.TempDir(), Options{}, func(o *broker.Options) { o.MaxPendingBytes = 1 })
	ts.createTopic("a", 1)
	var begun api.TxCreated
	decodeJSON(t, ts.must(http.StatusCreated, "POST", "/v1/transactions", `{}`).body, &begun)
	id := begun.ID
	ts.must(http.StatusOK, "POST", "/v1/transactions/"+id+"/messages", `{"messages":[{"topic":"a","value":1}]}`)

	// Hold the flusher in its fsync (a fault-injection hook: a real disk cannot be paused at
	// will), then queue a second write behind it, so the queue is over its limit.
	entered, release := make(chan struct{}), make(chan struct{})
	held := false
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if !held {
			held = true
			close(entered)
			<-release
		}
		return do()
	})
	defer restore()
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	go ts.b.Produce(context.Background(), "a", []broker.Message{{Value: []byte("1"), ValueJSON: true, Partition: -1}}, "")
	<-entered
	go ts.b.Produce(context.Background(), "a", []broker.Message{{Value: []byte("2"), ValueJSON: true, Partition: -1}}, "")
	waitFor(t, "a write queued behind the held flush", func() bool { return ts.b.Stats().PendingBytes > 0 })

	r := ts.do("POST", "/v1/transactions/"+id+"/commit", "")
	if r.status != http.StatusTooManyRequests {
		t.Fatalf("commit under back-pressure: %d %s, want 429", r.status, r.body)
	}
	if msg := errorBody(t, r).Error.Message; strings.Contains(msg, "rolled back") || !strings.Contains(msg, "still open") {
		t.Errorf("the 429 says %q; the transaction is still open", msg)
	}
	var st api.TxStatus
	decodeJSON(t, ts.must(http.StatusOK, "GET", "/v1/transactions/"+id, "").body, &st)
	if st.State != "open" {
		t.Fatalf("state after the refused commit: %q, want open", st.State)
	}
	close(release)
	released = true
	waitFor(t, "the queue to drain", func() bool { return ts.b.Stats().PendingBytes == 0 })
	var done api.TxCommitResponse
	decodeJSON(t, ts.must(http.StatusOK, "POST", "/v1/transactions/"+id+"/commit", "").body, &done)
	if len(done.Offsets) != 1 {
		t.Fatalf("retried commit stored %d messages, want 1", len(done.Offsets))
	}
}
