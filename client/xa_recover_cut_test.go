package client_test

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestXARecoverAnswerUnreadableIsRMFail: the server answered recover 200, but the list of
// branches could not be read: its body was cut off on every attempt (the retries ran out), or
// it came whole and was not the list (a proxy's page, JSON without the list: read as an empty
// list it would say nothing is prepared here, and a prepare whose vote was lost would vote
// XA_RDONLY for a prepared branch, never committed). Nothing is known of the
// prepared branches, so the answer is XAER_RMFAIL, on which a transaction manager runs its
// recovery scan again later, as the Java resource answers; not XAER_RMERR, a resource error.
// Once the answers are whole, recover lists the prepared branch.
func TestXARecoverAnswerUnreadableIsRMFail(t *testing.T) {
	isRecover := func(r *http.Request) bool { return r.URL.Path == "/v1/xa/recover" }
	for _, tc := range []struct {
		name string
		// spoil returns a client whose recover answers are spoiled while on, and how many
		// recover requests it sent.
		spoil func(on *atomic.Bool) (*http.Client, *atomic.Int64)
	}{
		{"cut-off", func(on *atomic.Bool) (*http.Client, *atomic.Int64) {
			cut, arm, _ := cutting(isRecover)
			var sent atomic.Int64
			return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				if isRecover(r) {
					sent.Add(1)
					if on.Load() {
						arm() // every attempt cut, so the retries run out
					}
				}
				return cut.Transport.RoundTrip(r)
			})}, &sent
		}},
		// A whole 200 whose body is not the list: a proxy's page, JSON without the list ({} or
		// "xids": null; the server always sends an array).
		{"not-json", spoilRecoverBody("<html>ok</html>")},
		{"no-list", spoilRecoverBody(`{}`)},
		{"null-list", spoilRecoverBody(`{"xids":null}`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := background(t)
			var on atomic.Bool
			hc, sent := tc.spoil(&on)
			c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithRetries(3), client.WithBackoff(time.Millisecond, 5*time.Millisecond))
			topic := uniqueTopic("xa-recover-" + tc.name)
			if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
				t.Fatal(err)
			}
			rm := c.NewXAResource()
			x := preparedBranch(t, rm, topic, "debit")
			if _, err := rm.Prepare(ctx, x); err != nil {
				t.Fatal(err)
			}
			on.Store(true)
			xids, err := rm.Recover(ctx)
			on.Store(false)
			if n := sent.Load(); n == 0 {
				t.Fatal("recover sent no request: the test tested nothing")
			} else {
				t.Logf("%d recover requests: %v", n, err)
			}
			if !client.IsXACode(err, client.XAERRMFail) {
				t.Fatalf("recover whose 200 answer could not be read: %v %v, want XAER_RMFAIL", xids, err)
			}
			xids, err = rm.Recover(ctx)
			if err != nil || !containsXid(xids, x) {
				t.Fatalf("recover %v %v does not list the prepared branch %s", xids, err, x)
			}
			if err := rm.Rollback(ctx, x); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// spoilRecoverBody is a spoil of TestXARecoverAnswerUnreadableIsRMFail: the server's 2xx to
// recover is answered with body instead, while on.
func spoilRecoverBody(body string) func(on *atomic.Bool) (*http.Client, *atomic.Int64) {
	return func(on *atomic.Bool) (*http.Client, *atomic.Int64) {
		var sent atomic.Int64
		return withRecoverBody(roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if r.URL.Path == "/v1/xa/recover" {
				sent.Add(1)
			}
			return http.DefaultTransport.RoundTrip(r)
		}), on, body), &sent
	}
}
