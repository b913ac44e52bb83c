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

// withRecoverBody answers the server's 2xx to /v1/xa/recover with body instead, while on.
func withRecoverBody(next http.RoundTripper, on *atomic.Bool, body string) *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(r)
		if err != nil || r.URL.Path != "/v1/xa/recover" || !on.Load() {
			return resp, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(strings.NewReader(body))
		resp.ContentLength = int64(len(body))
		return resp, nil
	})}
}

// TestXARecoverAnswerWithoutListIsRMFail: recover answered 2xx with a body that is JSON but
// holds no list of branches ({} from a proxy, or "xids": null; the server always sends an
// array). Read as an empty list it tells a transaction manager that nothing is prepared here,
// and a prepare whose vote was lost would then vote XA_RDONLY for a prepared branch, never
// committed: XAER_RMFAIL, as the Java resource answers.
func TestXARecoverAnswerWithoutListIsRMFail(t *testing.T) {
	for _, body := range []string{`{}`, `{"xids":null}`} {
		t.Run(body, func(t *testing.T) {
			ctx := background(t)
			var on atomic.Bool
			c := client.New(imagoURL, client.WithHTTPClient(withRecoverBody(http.DefaultTransport, &on, body)))
			topic := uniqueTopic("xa-recover-nolist")
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
			if !client.IsXACode(err, client.XAERRMFail) {
				t.Fatalf("recover answered 200 %s: %v %v, want XAER_RMFAIL", body, xids, err)
			}
			if err := rm.Rollback(ctx, x); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestXAPrepareAnswerCutOffRecoverWithoutList: the prepare's vote was cut off and recover
// answered 2xx without a list: the vote is unknown (XAER_RMFAIL), not XA_RDONLY, which would
// leave the prepared branch uncommitted for good.
func TestXAPrepareAnswerCutOffRecoverWithoutList(t *testing.T) {
	ctx := background(t)
	cut, arm, armed := cutting(func(r *http.Request) bool { return r.URL.Path == "/v1/xa/prepare" })
	var on atomic.Bool
	c := client.New(imagoURL, client.WithHTTPClient(withRecoverBody(cut.Transport, &on, `{}`)), client.WithBackoff(time.Millisecond, 5*time.Millisecond))
	topic := uniqueTopic("xa-prepare-cut-nolist")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	rm := c.NewXAResource()
	x := preparedBranch(t, rm, topic, "debit")
	arm()
	on.Store(true)
	rdonly, err := rm.Prepare(ctx, x)
	on.Store(false)
	if armed() {
		t.Fatal("the answer was not cut: the test tested nothing")
	}
	if !client.IsXACode(err, client.XAERRMFail) {
		t.Fatalf("prepare whose vote was cut off and whose recover answered {}: rdonly=%v err=%v, want XAER_RMFAIL", rdonly, err)
	}
	xids, err := rm.Recover(ctx)
	if err != nil || !containsXid(xids, x) {
		t.Fatalf("recover %v %v does not list the prepared branch %s", xids, err, x)
	}
	if err := rm.Rollback(ctx, x); err != nil {
		t.Fatal(err)
	}
}
