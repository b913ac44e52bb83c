package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestLocalTransaction: messages for two topics are invisible until commit, then visible
// together; a rolled-back transaction stores nothing.
func TestLocalTransaction(t *testing.T) {
	ctx := background(t)
	c := client.New(imagoURL)
	a, b := uniqueTopic("tx-a"), uniqueTopic("tx-b")
	for _, topic := range []string{a, b} {
		if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := c.Begin(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if tx.Timeout != time.Minute {
		t.Fatalf("timeout %v", tx.Timeout)
	}
	if n, err := tx.Add(ctx, client.To(a, client.Text("debit")), client.To(b, client.Text("credit"))); err != nil || n != 2 {
		t.Fatalf("add: %d %v", n, err)
	}
	st, err := c.Tx(tx.ID).Status(ctx)
	if err != nil || st.State != client.TxOpen || st.Messages == nil || *st.Messages != 2 {
		t.Fatalf("status: %+v %v", st, err)
	}
	if endOffset(t, c, a)+endOffset(t, c, b) != 0 {
		t.Fatal("open transaction's messages are visible")
	}
	pos, err := tx.Commit(ctx)
	if err != nil || len(pos) != 2 || pos[0].Topic != a || pos[1].Topic != b {
		t.Fatalf("commit: %+v %v", pos, err)
	}
	if endOffset(t, c, a) != 1 || endOffset(t, c, b) != 1 {
		t.Fatal("committed messages are not visible")
	}

	tx2, err := c.Begin(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx2.Add(ctx, client.To(a, client.Text("never"))); err != nil {
		t.Fatal(err)
	}
	if err := tx2.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := tx2.Status(ctx); err != nil || st.State != client.TxRolledBack {
		t.Fatalf("status after rollback: %+v %v", st, err)
	}
	if _, err := tx2.Commit(ctx); !client.IsCode(err, "transaction_not_open") {
		t.Fatalf("commit after rollback: %v", err)
	}
	if _, err := c.Tx("0123456789abcdef").Status(ctx); !client.IsStatus(err, 404) {
		t.Fatalf("status of an unknown transaction: %v", err)
	}
	if endOffset(t, c, a) != 1 {
		t.Fatal("rolled back message is visible")
	}
}

// TestTxCommitLostAnswer: the answer of a commit is lost after the server committed (a proxy
// cuts it: no real server does that on demand); Commit learns the outcome from the status
// and returns the positions, and nothing is stored twice.
func TestTxCommitLostAnswer(t *testing.T) {
	ctx := background(t)
	var cut atomic.Bool
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && strings.HasSuffix(r.URL.Path, "/commit") && cut.CompareAndSwap(true, false) {
			resp.Body.Close()
			return nil, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer (injected)")}
		}
		return resp, err
	})}
	c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 5*time.Millisecond))
	tx, topic := txOfTwo(t, c, "tx-lost")
	cut.Store(true)
	pos, err := tx.Commit(ctx)
	if err != nil || len(pos) != 2 || pos[0].Offset != 0 || pos[1].Offset != 1 {
		t.Fatalf("commit with a lost answer: %+v %v", pos, err)
	}
	if cut.Load() {
		t.Fatal("the answer was not cut: the test tested nothing")
	}
	if end := endOffset(t, c, topic); end != 2 {
		t.Fatalf("end %d, want 2", end)
	}
}

// TestTxCommitAgainAfterUnknownOutcome: the answer of a commit is lost after the server
// committed (a proxy cuts it: no real server does that on demand) and the caller's context ends
// before Commit learnt the outcome, so Commit returns with the outcome unknown. The caller
// commits the same transaction again to settle it: a transaction that is committed answers its
// positions, not 409 transaction_not_open, which a caller takes for a commit that failed (and
// publishes the messages again in a new transaction). Nothing is stored twice.
func TestTxCommitAgainAfterUnknownOutcome(t *testing.T) {
	ctx := background(t)
	first, cancelFirst := context.WithCancel(ctx)
	defer cancelFirst()
	var cut atomic.Bool
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && strings.HasSuffix(r.URL.Path, "/commit") && cut.CompareAndSwap(true, false) {
			resp.Body.Close()
			cancelFirst() // the caller gives up before the status is read
			return nil, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer (injected)")}
		}
		return resp, err
	})}
	c := client.New(imagoURL, client.WithHTTPClient(hc), client.WithBackoff(time.Millisecond, 5*time.Millisecond))
	tx, topic := txOfTwo(t, c, "tx-again")
	cut.Store(true)
	if pos, err := tx.Commit(first); !errors.Is(err, context.Canceled) {
		t.Fatalf("commit whose answer was lost and whose context ended: %+v %v; want the context's error (outcome unknown)", pos, err)
	}
	pos, err := tx.Commit(ctx)
	if err != nil || len(pos) != 2 || pos[0].Offset != 0 || pos[1].Offset != 1 {
		t.Fatalf("commit again of the committed transaction: %+v %v; want its positions 0 and 1", pos, err)
	}
	if end := endOffset(t, c, topic); end != 2 {
		t.Fatalf("end %d, want 2", end)
	}
}

// txOfTwo creates a topic of one partition named after prefix and begins a transaction on c
// that holds two messages for it, x and y.
func txOfTwo(t *testing.T, c *client.Client, prefix string) (*client.Tx, string) {
	t.Helper()
	ctx := background(t)
	topic := uniqueTopic(prefix)
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	tx, err := c.Begin(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Add(ctx, client.To(topic, client.Text("x")), client.To(topic, client.Text("y"))); err != nil {
		t.Fatal(err)
	}
	return tx, topic
}
