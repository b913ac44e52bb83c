package gateway

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
)

// TestLongPollWakesOnProduce starts a fetch that waits at the end of a partition, waits until
// the server reports it in flight, produces, and checks that the fetch returns the message
// well before its wait ends.
func TestLongPollWakesOnProduce(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	type result struct {
		got  api.FetchResponse
		took time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		var out api.FetchResponse
		r := ts.do("GET", "/v1/topics/t/partitions/0/messages?offset=0&wait_ms=20000", "")
		if r.status == http.StatusOK {
			decodeJSON(t, r.body, &out)
		}
		done <- result{out, time.Since(start)}
	}()
	waitFor(t, "the long poll to be in flight", func() bool {
		return ts.inFlight() == 1
	})
	ts.produce("t", `{"messages":[{"value":"wake"}]}`)
	select {
	case res := <-done:
		if len(res.got.Messages) != 1 || string(res.got.Messages[0].Value) != `"wake"` {
			t.Fatalf("long poll returned %+v", res.got)
		}
		if res.took > 10*time.Second {
			t.Fatalf("long poll took %v", res.took)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("long poll did not return after a produce")
	}
}

// TestLongPollEndsOnClose checks that Close ends a waiting fetch with an empty answer.
func TestLongPollEndsOnClose(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	done := make(chan response, 1)
	go func() { done <- ts.do("GET", "/v1/topics/t/partitions/0/messages?offset=0&wait_ms=30000", "") }()
	waitFor(t, "the long poll to be in flight", func() bool {
		return ts.inFlight() == 1
	})
	ts.s.Close()
	select {
	case r := <-done:
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `"messages":[]`) {
			t.Fatalf("after Close: %d %s", r.status, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the long poll")
	}
	if r := ts.do("GET", "/readyz", ""); r.status != http.StatusServiceUnavailable || errorBody(t, r).Error.Code != "not_ready" {
		t.Fatalf("readyz after Close: %d %s", r.status, r.body)
	}
}

// TestLongPollTimesOut checks that a wait with nothing to read ends with no messages.
func TestLongPollTimesOut(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	start := time.Now()
	got := ts.fetch("t", 0, "offset=0&wait_ms=50")
	if len(got.Messages) != 0 || got.NextOffset != 0 {
		t.Fatalf("%+v", got)
	}
	if d := time.Since(start); d < 40*time.Millisecond {
		t.Fatalf("returned after %v, before the wait", d)
	}
}

// waitFor polls cond until it holds (or fails the test after 10 s).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
