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
	return withBody(next, "/v1/xa/recover", on, body)
}

// withBody answers the server's 2xx to path with body instead, while on.
func withBody(next http.RoundTripper, path string, on *atomic.Bool, body string) *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(r)
		if err != nil || r.URL.Path != path || resp.StatusCode/100 != 2 || !on.Load() {
			return resp, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(strings.NewReader(body))
		resp.ContentLength = int64(len(body))
		return resp, nil
	})}
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
