package client_test

import (
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// The tests of this file cut off the body of the real server's 2xx answer to /v1/xa/prepare
// (the `cutting` transport of cut_answer_test.go): a real server answers whole, and a cut on
// demand needs a fake layer between it and the client. The server did prepare; only the vote
// is lost, and Prepare must find it rather than answer XAER_RMERR, which makes a transaction
// manager roll the whole global transaction back.

// preparedBranch starts a branch on rm, publishes msgs to topic (none: a read-only branch)
// and ends it, ready for prepare.
func preparedBranch(t *testing.T, rm *client.XAResource, topic string, msgs ...string) client.Xid {
	t.Helper()
	ctx := background(t)
	x := newXid()
	if err := rm.Start(ctx, x, client.TMNoFlags); err != nil {
		t.Fatal(err)
	}
	if len(msgs) > 0 {
		var tm []client.TxMessage
		for _, m := range msgs {
			tm = append(tm, client.To(topic, client.Text(m)))
		}
		if err := rm.Publish(ctx, x, tm...); err != nil {
			t.Fatal(err)
		}
	}
	if err := rm.End(ctx, x, client.TMSuccess); err != nil {
		t.Fatal(err)
	}
	return x
}

// TestXAPrepareAnswerCutOffVotesFromRecover: the server prepared the branch and answered 200,
// but the body with the vote was cut off. A branch holding messages is prepared and listed by
// recover: the vote is XA_OK, and the branch commits. A branch holding none was forgotten by
// the server: the vote is XA_RDONLY. (Before, both answered XAER_RMERR.)
func TestXAPrepareAnswerCutOffVotesFromRecover(t *testing.T) {
	ctx := background(t)
	hc, arm, armed := cutting(func(r *http.Request) bool { return r.URL.Path == "/v1/xa/prepare" })
	c := client.New(imagoURL, client.WithHTTPClient(hc))
	topic := uniqueTopic("xa-prepare-cut")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	rm := c.NewXAResource()

	t.Run("prepared", func(t *testing.T) {
		x := preparedBranch(t, rm, topic, "debit", "credit")
		arm()
		rdonly, err := rm.Prepare(ctx, x)
		if armed() {
			t.Fatal("the answer was not cut: the test tested nothing")
		}
		if err != nil || rdonly {
			t.Fatalf("prepare of a branch with messages whose 200 answer was cut off: rdonly=%v err=%v, want vote XA_OK", rdonly, err)
		}
		if _, err := rm.Commit(ctx, x, false); err != nil {
			t.Fatalf("commit after the recovered vote: %v", err)
		}
		if end := endOffset(t, c, topic); end != 2 {
			t.Fatalf("end %d, want 2: the branch is committed", end)
		}
	})

	t.Run("read-only", func(t *testing.T) {
		x := preparedBranch(t, rm, topic)
		arm()
		rdonly, err := rm.Prepare(ctx, x)
		if armed() {
			t.Fatal("the answer was not cut: the test tested nothing")
		}
		if err != nil || !rdonly {
			t.Fatalf("prepare of an empty branch whose 200 answer was cut off: rdonly=%v err=%v, want vote XA_RDONLY", rdonly, err)
		}
		if _, err := rm.Commit(ctx, x, false); !client.IsXACode(err, client.XAERNota) {
			t.Fatalf("commit of the read-only branch: %v, want XAER_NOTA (it is forgotten)", err)
		}
	})
}

// TestXAPrepareAnswerCutOffAndRecoverFails: the vote was cut off and recover, which would tell
// it, fails too. The outcome of the prepare is unknown to the client: XAER_RMFAIL (the
// manager recovers the branch later), never XAER_RMERR.
func TestXAPrepareAnswerCutOffAndRecoverFails(t *testing.T) {
	ctx := background(t)
	cut, arm, armed := cutting(func(r *http.Request) bool { return r.URL.Path == "/v1/xa/prepare" })
	var recoverFails atomic.Bool
	var recovers atomic.Int64
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.URL.Path == "/v1/xa/recover" {
			recovers.Add(1)
			if recoverFails.Load() {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused (injected)")}
			}
		}
		return cut.Transport.RoundTrip(r)
	})}
	c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 5*time.Millisecond))
	topic := uniqueTopic("xa-prepare-cut-rmfail")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	rm := c.NewXAResource()
	x := preparedBranch(t, rm, topic, "debit")
	arm()
	recoverFails.Store(true)
	_, err := rm.Prepare(ctx, x)
	recoverFails.Store(false)
	if armed() {
		t.Fatal("the answer was not cut: the test tested nothing")
	}
	if recovers.Load() == 0 {
		t.Fatal("prepare did not ask recover")
	}
	if !client.IsXACode(err, client.XAERRMFail) {
		t.Fatalf("prepare whose vote was cut off and whose recover failed: %v, want XAER_RMFAIL", err)
	}
	// The branch is prepared on the server: the manager's recovery finds it and rolls it back.
	xids, err := rm.Recover(ctx)
	if err != nil || !containsXid(xids, x) {
		t.Fatalf("recover %v %v does not list the prepared branch %s", xids, err, x)
	}
	if err := rm.Rollback(ctx, x); err != nil {
		t.Fatal(err)
	}
	if end := endOffset(t, c, topic); end != 0 {
		t.Fatalf("end %d, want 0: the branch is rolled back", end)
	}
}
