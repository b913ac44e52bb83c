package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/offsetdb"
)

// TestConsumerRecoversALostPollAnswer: the answer of a poll that carried messages is thrown
// away after the server sent it (the transport reads it and reports a cut connection), with
// nothing produced after it. The consumer's next poll says where it is, so the server reads
// those messages again: every message is handled, without a rebalance or a later message to
// reveal the gap. (A fake transport: a real connection cut exactly after the server wrote
// its answer cannot be produced on demand.)
func TestConsumerRecoversALostPollAnswer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs, err := offsetdb.OpenFile(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { offs.Close() })
	srv := startImago(t, "", gateway.Options{Offsets: offs, Logger: quietLogger()})
	c := client.New(srv.URL)
	topic := uniqueTopic("lost.")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	var msgs []client.Message
	for range 6 {
		msgs = append(msgs, client.Message{Value: []byte(`"m"`)})
	}
	if _, err := c.Produce(ctx, topic, msgs, client.ProduceOptions{}); err != nil {
		t.Fatal(err)
	}

	var polls atomic.Int64
	lossy := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil || r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/messages") {
			return resp, err
		}
		if polls.Add(1) == 2 { // the first poll delivers 0..2, the second 3..5: lose that one
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return nil, errors.New("connection reset by peer (injected after the server answered)")
		}
		return resp, nil
	})}
	cs := client.NewConsumer(client.New(srv.URL, client.WithHTTPClient(lossy)), "lost-answer", []string{topic},
		client.ConsumerMaxMessages(3), client.ConsumerPollWait(100*time.Millisecond), client.ConsumerLogger(quietLogger()))
	var mu sync.Mutex
	handled := map[int64]int{}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- cs.Run(rctx, func(_ context.Context, m client.FetchedMessage) error {
			mu.Lock()
			handled[m.Offset]++
			n := len(handled)
			mu.Unlock()
			if n == 6 {
				stop()
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		mu.Lock()
		t.Fatalf("after %d polls the consumer handled offsets %v, want 0..5", polls.Load(), handled)
	}
	mu.Lock()
	defer mu.Unlock()
	for off := int64(0); off < 6; off++ {
		if handled[off] != 1 {
			t.Errorf("offset %d handled %d times, want once", off, handled[off])
		}
	}
	if polls.Load() < 3 {
		t.Errorf("%d polls: the lost answer was never injected", polls.Load())
	}
}
