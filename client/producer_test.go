package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestProducerBatchesAndKeepsKeyOrder sends many keyed messages from several goroutines and
// checks that every one is acknowledged once, that they were batched (fewer requests than
// messages), and that each key's messages are stored in the order they were sent.
func TestProducerBatchesAndKeepsKeyOrder(t *testing.T) {
	ctx := background(t)
	var requests atomic.Int64
	hc := &http.Client{Transport: countingTransport{http.DefaultTransport, &requests}}
	c := client.New(imagoURL, client.WithHTTPClient(hc))
	topic := uniqueTopic("producer-order")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	requests.Store(0)
	p := c.NewProducer(client.ProducerLinger(2*time.Millisecond), client.ProducerMaxBatch(50), client.ProducerLanes(3))
	const keys, perKey = 8, 60
	var mu sync.Mutex
	got := map[string][]client.Position{} // per key, in callback order
	var failed atomic.Int64
	var wg sync.WaitGroup
	for k := range keys {
		wg.Go(func() {
			key := fmt.Sprintf("acct-%d", k)
			for i := range perKey {
				m := client.Message{Key: client.Ptr(key), Value: []byte(fmt.Sprintf(`{"key":%q,"seq":%d}`, key, i))}
				err := p.Send(ctx, topic, m, func(d client.Delivery) {
					if d.Err != nil {
						failed.Add(1)
						t.Errorf("delivery: %v", d.Err)
						return
					}
					mu.Lock()
					got[key] = append(got[key], d.Position)
					mu.Unlock()
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := p.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if failed.Load() > 0 {
		t.FailNow()
	}
	if n := requests.Load(); n >= keys*perKey/2 {
		t.Errorf("%d requests for %d messages: not batched", n, keys*perKey)
	}
	t.Logf("%d messages in %d requests", keys*perKey, requests.Load())
	// Read everything back: per key, the seq numbers must be 0..perKey-1 in offset order.
	desc, err := c.DescribeTopic(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string][]int{}
	total := 0
	for _, part := range desc.Partitions {
		for off := part.StartOffset; off < part.EndOffset; {
			res, err := c.Fetch(ctx, topic, part.Partition, client.FetchOptions{Offset: off, MaxMessages: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range res.Messages {
				var v struct {
					Key string `json:"key"`
					Seq int    `json:"seq"`
				}
				if err := jsonUnmarshal(m.Value, &v); err != nil {
					t.Fatal(err)
				}
				seen[v.Key] = append(seen[v.Key], v.Seq)
				total++
			}
			off = res.NextOffset
		}
	}
	if total != keys*perKey {
		t.Fatalf("stored %d messages, sent %d", total, keys*perKey)
	}
	for key, seqs := range seen {
		for i, s := range seqs {
			if s != i {
				t.Fatalf("key %s stored out of order: %v", key, seqs)
			}
		}
		if len(got[key]) != perKey {
			t.Fatalf("key %s: %d callbacks", key, len(got[key]))
		}
	}
}

// TestProducerFlushAndChannels: SendCh and SendSync deliver, Flush waits for callbacks, a
// closed producer refuses.
func TestProducerFlushAndChannels(t *testing.T) {
	ctx := background(t)
	c := client.New(imagoURL)
	topic := uniqueTopic("producer-flush")
	p := c.NewProducer(client.ProducerLinger(time.Hour)) // only Flush or Close send
	var called atomic.Int64
	for i := range 10 {
		if err := p.Send(ctx, topic, client.Text(fmt.Sprint(i)), func(d client.Delivery) { called.Add(1) }); err != nil {
			t.Fatal(err)
		}
	}
	ch := p.SendCh(ctx, topic, client.Text("ch"))
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if called.Load() != 10 {
		t.Fatalf("after Flush %d callbacks ran, want 10", called.Load())
	}
	d := <-ch
	if d.Err != nil || d.Topic != topic {
		t.Fatalf("SendCh: %+v", d)
	}
	// SendSync under a linger of an hour completes only when something flushes: use a short one.
	p2 := c.NewProducer(client.ProducerLinger(0))
	pos, err := p2.SendSync(ctx, topic, client.Text("sync"))
	if err != nil || pos.Offset != 11 {
		t.Fatalf("SendSync: %+v %v (want offset 11)", pos, err)
	}
	for _, q := range []*client.Producer{p, p2} {
		if err := q.Close(ctx); err != nil {
			t.Fatal(err)
		}
		if err := q.Send(ctx, topic, client.Text("late"), nil); !errors.Is(err, client.ErrProducerClosed) {
			t.Fatalf("Send after Close: %v", err)
		}
	}
}

// TestProducerIdempotentRetry: the first answer of each produce request is lost (the
// connection is cut after the server has stored the batch); the idempotent producer retries
// with the batch's key and the server answers with the first positions: each message is
// stored once. With idempotency off the loss is reported and nothing is retried.
//
// The lost answer is made by a proxy in front of the real server: no real server loses an
// answer on demand.
func TestProducerIdempotentRetry(t *testing.T) {
	ctx := background(t)
	topic := uniqueTopic("producer-retry")
	direct := client.New(imagoURL)
	if _, err := direct.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	var cut atomic.Int64
	cutFirst := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err == nil && r.Method == http.MethodPost && cut.Add(1)%2 == 1 {
			resp.Body.Close()
			return nil, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer (injected)")}
		}
		return resp, err
	})}
	c := client.New(imagoURL, client.WithHTTPClient(cutFirst), client.WithBackoff(time.Millisecond, 5*time.Millisecond))
	p := c.NewProducer(client.ProducerLinger(0), client.ProducerLanes(1))
	for i := range 5 {
		pos, err := p.SendSync(ctx, topic, client.Text(fmt.Sprint(i)))
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if pos.Offset != int64(i) {
			t.Fatalf("send %d stored at %d", i, pos.Offset)
		}
	}
	p.Close(ctx)
	if d, err := direct.DescribeTopic(ctx, topic); err != nil || d.Partitions[0].EndOffset != 5 {
		t.Fatalf("stored %+v %v, want 5 messages", d, err)
	}

	cut.Store(0)
	p = c.NewProducer(client.ProducerLinger(0), client.ProducerIdempotent(false))
	if _, err := p.SendSync(ctx, topic, client.Text("once")); err == nil {
		t.Fatal("without idempotency a lost answer must be reported, not retried")
	}
	p.Close(ctx)
	if d, _ := direct.DescribeTopic(ctx, topic); d.Partitions[0].EndOffset != 6 {
		t.Fatalf("end %d: the non-idempotent send was stored %d times", d.Partitions[0].EndOffset, d.Partitions[0].EndOffset-5)
	}
}

// TestRetryBackpressure: 429 and 503 are retried for keyed produce and GETs, honouring the
// context's deadline; a produce without a key is not retried. A test server answers the
// refusals, since a real broker refuses only under real overload.
func TestRetryBackpressure(t *testing.T) {
	var calls atomic.Int64
	var refuse atomic.Int64
	var retryAfter atomic.Bool
	srv := newRefusingProxy(t, &calls, &refuse, &retryAfter)
	c := client.New(srv, client.WithBackoff(time.Millisecond, 2*time.Millisecond))
	ctx := background(t)
	topic := uniqueTopic("retry")

	refuse.Store(2)
	if _, err := c.Produce(ctx, topic, []client.Message{client.Text("a")}, client.ProduceOptions{Idempotent: true}); err != nil {
		t.Fatalf("keyed produce after two 429: %v", err)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d calls, want 3", calls.Load())
	}
	calls.Store(0)
	refuse.Store(1)
	if _, err := c.Produce(ctx, topic, []client.Message{client.Text("b")}, client.ProduceOptions{}); !client.IsStatus(err, 429) || calls.Load() != 1 {
		t.Fatalf("unkeyed produce: %v after %d calls, want one 429", err, calls.Load())
	}
	calls.Store(0)
	refuse.Store(100)
	if _, err := c.ListTopics(ctx); !client.IsStatus(err, 429) || calls.Load() != 5 {
		t.Fatalf("list: %v after %d calls, want 429 after 5", err, calls.Load())
	}
	calls.Store(0)
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	retryAfter.Store(true) // the server asks for a second: more than the deadline leaves
	slow := client.New(srv)
	start := time.Now()
	if _, err := slow.ListTopics(short); err == nil || time.Since(start) > 40*time.Millisecond {
		t.Fatalf("a retry that cannot fit the deadline must not sleep: %v after %v", err, time.Since(start))
	}
}
