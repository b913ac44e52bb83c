package client_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// The tests of this file put a proxy's 502 or 504 between the client and the real server: the
// server never answers so, a load balancer does when the server's answer did not come (a fake
// layer, since a real server cannot be made to). With forward set, the request reached the
// server first, which did it; without, it never got there.

// proxyGaveUp answers the first request that match accepts with status, after passing it on
// to the real server when forward is set; every other request goes to the real server.
func proxyGaveUp(status int, forward bool, match func(*http.Request) bool) (*http.Client, *atomic.Int64) {
	var hits atomic.Int64
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if !match(r) || hits.Add(1) > 1 {
			return http.DefaultTransport.RoundTrip(r)
		}
		if forward {
			resp, err := http.DefaultTransport.RoundTrip(r)
			if err != nil {
				return nil, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return &http.Response{StatusCode: status, Request: r, Header: http.Header{"Content-Type": {"text/html"}},
			Body: io.NopCloser(strings.NewReader("<html><body>" + http.StatusText(status) + "</body></html>"))}, nil
	})}, &hits
}

// A keyed produce that a proxy answered 502 or 504 after the server stored it is retried with
// its key: the retry answers the first attempt's offsets and nothing is stored twice. Before,
// the 504 went back to the caller as a failure, and a caller that sent again under a new key
// (Idempotent makes one up) stored a second copy.
func TestKeyedProduceBehindProxyThatGaveUp(t *testing.T) {
	ctx := background(t)
	for _, status := range []int{http.StatusBadGateway, http.StatusGatewayTimeout} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			topic := uniqueTopic("proxy-gave-up")
			if _, err := client.New(imagoURL).CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
				t.Fatal(err)
			}
			hc, hits := proxyGaveUp(status, true, func(r *http.Request) bool { return r.Method == http.MethodPost })
			c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 2*time.Millisecond))
			res, err := c.Produce(ctx, topic, []client.Message{client.Text("debit")}, client.ProduceOptions{Idempotent: true})
			if hits.Load() < 2 {
				t.Fatalf("the produce was sent %d times: a %d was not retried (err %v)", hits.Load(), status, err)
			}
			if err != nil {
				t.Fatalf("keyed produce behind a proxy that answered %d once: %v, want the first attempt's outcome", status, err)
			}
			if len(res.Offsets) != 1 || res.Offsets[0].Offset != 0 {
				t.Fatalf("offsets %+v, want the first attempt's offset 0", res.Offsets)
			}
			if end := endOffset(t, client.New(imagoURL), topic); end != 1 {
				t.Fatalf("end %d, want 1: stored once", end)
			}
		})
	}
}

// A transaction commit answered 504 by a proxy after the server committed is settled through
// the transaction's status: Commit returns the positions. Before, the 504 came back as a
// failed commit, and a caller that published again in a new transaction stored it twice.
func TestTxCommitBehindProxyThatGaveUp(t *testing.T) {
	ctx := background(t)
	topic := uniqueTopic("tx-proxy-gave-up")
	if _, err := client.New(imagoURL).CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	hc, hits := proxyGaveUp(http.StatusGatewayTimeout, true, func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/commit") })
	c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 2*time.Millisecond))
	tx, err := c.Begin(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Add(ctx, client.To(topic, client.Text("credit"))); err != nil {
		t.Fatal(err)
	}
	pos, err := tx.Commit(ctx)
	if hits.Load() == 0 {
		t.Fatal("no commit went through the proxy: the test tested nothing")
	}
	if err != nil || len(pos) != 1 || pos[0].Offset != 0 {
		t.Fatalf("commit answered 504 by a proxy after the server committed: %+v %v, want position 0", pos, err)
	}
	if end := endOffset(t, client.New(imagoURL), topic); end != 1 {
		t.Fatalf("end %d, want 1", end)
	}
}

// An XA commit answered 500 or 504 by a proxy that never reached the server says nothing of the
// branch: XAER_RMFAIL, and the manager commits again later. Before, it was XAER_RMERR, which
// from xa_commit tells a manager that the branch's work was rolled back (the Java resource
// already answered XAER_RMFAIL). start, which reports no outcome, keeps XAER_RMERR for a 500.
func TestXACommitBehindProxyThatFailedIsRMFail(t *testing.T) {
	ctx := background(t)
	topic := uniqueTopic("xa-proxy")
	if _, err := client.New(imagoURL).CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	for _, status := range []int{http.StatusInternalServerError, http.StatusGatewayTimeout} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			rm := client.New(imagoURL).NewXAResource()
			x := preparedBranch(t, rm, topic, "debit")
			if _, err := rm.Prepare(ctx, x); err != nil {
				t.Fatal(err)
			}
			hc, hits := proxyGaveUp(status, false, func(r *http.Request) bool { return r.URL.Path == "/v1/xa/commit" })
			_, err := client.New(imagoURL, client.WithHTTPClient(hc)).NewXAResource().Commit(ctx, x, false)
			if hits.Load() != 1 {
				t.Fatalf("%d commits went through the proxy, want 1", hits.Load())
			}
			if !client.IsXACode(err, client.XAERRMFail) {
				t.Fatalf("commit answered %d by a proxy: %v, want XAER_RMFAIL (XAER_RMERR says the branch was rolled back)", status, err)
			}
			if _, err := rm.Commit(ctx, x, false); err != nil {
				t.Fatalf("the manager's second commit: %v", err)
			}
		})
	}
	hc, _ := proxyGaveUp(http.StatusInternalServerError, false, func(r *http.Request) bool { return r.URL.Path == "/v1/xa/start" })
	err := client.New(imagoURL, client.WithHTTPClient(hc)).NewXAResource().Start(ctx, newXid(), client.TMNoFlags)
	if !client.IsXACode(err, client.XAERRMErr) {
		t.Fatalf("start answered 500: %v, want XAER_RMERR (the branch is not prepared: the manager rolls back)", err)
	}
}
