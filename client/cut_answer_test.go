package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// The tests of this file cut off the body of a 2xx answer after its status line (the transport
// hands over the server's real answer, whose body then fails half-way): a 2xx status means the
// server did what was asked, so the call must not report a failure it cannot know of.

// cutBody is an answer body that yields the first half of the server's body, then fails like a
// connection reset.
type cutBody struct {
	r io.Reader
}

func (b *cutBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer (injected)")}
	}
	return n, err
}

func (b *cutBody) Close() error { return nil }

// cutting returns an HTTP client whose next answer to a request that match selects, once
// armed, has its body cut off half-way.
func cutting(match func(*http.Request) bool) (hc *http.Client, arm func(), armed func() bool) {
	var on atomic.Bool
	hc = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil || !match(r) || resp.StatusCode/100 != 2 || !on.CompareAndSwap(true, false) {
			return resp, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = &cutBody{strings.NewReader(string(body[:len(body)/2]))}
		resp.ContentLength = -1
		return resp, nil
	})}
	return hc, func() { on.Store(true) }, on.Load
}

// TestTxCommitAnswerCutOffAfterSuccess: the server committed and answered 200, but the body
// with the positions was cut off. Commit reads them from the transaction's status instead of
// reporting a failure for a commit that is done.
func TestTxCommitAnswerCutOffAfterSuccess(t *testing.T) {
	ctx := background(t)
	hc, arm, armed := cutting(func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/commit") })
	c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 5*time.Millisecond))
	tx, topic := txOfTwo(t, c, "tx-cut")
	arm()
	pos, err := tx.Commit(ctx)
	if armed() {
		t.Fatal("the answer was not cut: the test tested nothing")
	}
	if err != nil || len(pos) != 2 || pos[0].Offset != 0 || pos[1].Offset != 1 {
		t.Fatalf("commit whose 200 answer was cut off: %+v %v, want offsets 0 and 1", pos, err)
	}
	if end := endOffset(t, c, topic); end != 2 {
		t.Fatalf("end %d, want 2", end)
	}
}

// TestTxCommitStopsWhenItsStatusIsRefused: the answer of a commit is lost, and the server
// refuses to tell the transaction's status (403). Asking again gets the same answer: Commit
// returns ErrOutcomeUnknown at once instead of asking until its context ends.
func TestTxCommitStopsWhenItsStatusIsRefused(t *testing.T) {
	var lose atomic.Bool
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/transactions/") {
			return &http.Response{StatusCode: http.StatusForbidden, Header: http.Header{"Content-Type": {"application/json"}},
				Body:    io.NopCloser(strings.NewReader(`{"error":{"code":"forbidden","message":"token \"w\" may not read transactions (injected)"}}`)),
				Request: r}, nil
		}
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && strings.HasSuffix(r.URL.Path, "/commit") && lose.CompareAndSwap(true, false) {
			resp.Body.Close()
			return nil, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer (injected)")}
		}
		return resp, err
	})}
	c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 5*time.Millisecond))
	topic := uniqueTopic("tx-refused")
	ctx := background(t)
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Add(ctx, client.To(topic, client.Text("x"))); err != nil {
		t.Fatal(err)
	}
	lose.Store(true)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = tx.Commit(cctx)
	if !errors.Is(err, client.ErrOutcomeUnknown) || cctx.Err() != nil {
		t.Fatalf("commit whose status is refused: %v (context: %v), want ErrOutcomeUnknown before the context ends", err, cctx.Err())
	}
}

// TestXACommitAnswerCutOffAfterSuccess: the server committed the branch and answered 200, but
// the body was cut off. The branch is committed: Commit must not answer XAER_RMERR, which
// tells a transaction manager that the branch was rolled back.
func TestXACommitAnswerCutOffAfterSuccess(t *testing.T) {
	ctx := background(t)
	hc, arm, armed := cutting(func(r *http.Request) bool { return r.URL.Path == "/v1/xa/commit" })
	c := client.New(imagoURL, client.WithHTTPClient(hc))
	topic := uniqueTopic("xa-cut")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	rm := c.NewXAResource()
	x := newXid()
	if err := rm.Start(ctx, x, client.TMNoFlags); err != nil {
		t.Fatal(err)
	}
	if err := rm.Publish(ctx, x, client.To(topic, client.Text("debit")), client.To(topic, client.Text("credit"))); err != nil {
		t.Fatal(err)
	}
	if err := rm.End(ctx, x, client.TMSuccess); err != nil {
		t.Fatal(err)
	}
	if _, err := rm.Prepare(ctx, x); err != nil {
		t.Fatal(err)
	}
	arm()
	if _, err := rm.Commit(ctx, x, false); err != nil {
		t.Fatalf("commit whose 200 answer was cut off: %v, want no error (the branch is committed)", err)
	}
	if armed() {
		t.Fatal("the answer was not cut: the test tested nothing")
	}
	if end := endOffset(t, c, topic); end != 2 {
		t.Fatalf("end %d, want 2: the branch is committed", end)
	}
}

// TestKeyedProduceAnswerCutOffIsAskedAgain: a keyed produce is safe to repeat, so a 200
// answer cut off on the way is asked again with the same key: the caller gets the positions
// (from the first append) and the message is stored once.
func TestKeyedProduceAnswerCutOffIsAskedAgain(t *testing.T) {
	ctx := background(t)
	hc, arm, armed := cutting(func(r *http.Request) bool {
		return r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/messages")
	})
	c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 5*time.Millisecond))
	topic := uniqueTopic("produce-cut")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	arm()
	res, err := c.Produce(ctx, topic, []client.Message{client.Text("once")}, client.ProduceOptions{Idempotent: true})
	if armed() {
		t.Fatal("the answer was not cut: the test tested nothing")
	}
	if err != nil || len(res.Offsets) != 1 || res.Offsets[0].Offset != 0 || !res.Duplicate {
		t.Fatalf("keyed produce whose 200 answer was cut off: %+v %v, want offset 0 from the repeat (duplicate)", res, err)
	}
	if end := endOffset(t, c, topic); end != 1 {
		t.Fatalf("end %d, want 1", end)
	}
}
