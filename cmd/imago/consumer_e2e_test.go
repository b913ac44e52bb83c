package main

// End-to-end tests of the Go client's group consumer (client.Consumer) against a real
// `imago serve` child process: join, poll, commit and leave; retries, the dead-letter topic
// and `imago dlq replay`; rebalances; rejoining after the session timed out.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// uniqueName returns prefix followed by 12 random hex digits.
func uniqueName(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// produceN produces n messages {"n": i} to topic, round-robin over partitions, and returns
// the end offset of each partition afterwards.
func produceN(t testing.TB, c *client.Client, topic string, partitions, from, n int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < from+n; {
		var batch []client.Message
		for ; i < from+n && len(batch) < 200; i++ {
			batch = append(batch, client.Message{Value: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), Partition: client.Ptr(i % partitions)})
		}
		if _, err := c.Produce(ctx, topic, batch, client.ProduceOptions{}); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
}

func msgN(t testing.TB, m client.FetchedMessage) int {
	var v struct{ N int }
	if err := json.Unmarshal(m.Value, &v); err != nil {
		t.Errorf("message %s/%d/%d: value %s: %v", m.Topic, m.Partition, m.Offset, m.Value, err)
	}
	return v.N
}

// quietLogger keeps the consumers' logs in the test log only when -v.
func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitFor polls cond every 10ms until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// runConsumer runs cs.Run in a goroutine and returns a stop function that cancels it and
// returns Run's error.
func runConsumer(t testing.TB, run func(ctx context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = errors.New("consumer did not stop within 30s")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// groupState returns the committed offsets of group on topic by partition, and its members.
func groupState(t testing.TB, c *client.Client, group, topic string) (map[int]int64, int) {
	t.Helper()
	g, err := c.GroupOffsets(context.Background(), group)
	if client.IsCode(err, "unknown_group") {
		return map[int]int64{}, 0
	}
	if err != nil {
		t.Fatalf("group offsets of %s: %v", group, err)
	}
	out := map[int]int64{}
	for _, o := range g.Offsets {
		if o.Topic == topic {
			out[o.Partition] = o.Offset
		}
	}
	return out, len(g.Members)
}

func TestConsumerJoinPollCommitLeave(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	c := srv.client()
	ctx := context.Background()
	topic, group := uniqueName(t, "orders."), uniqueName(t, "g")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	produceN(t, c, topic, 3, 0, 30)

	var mu sync.Mutex
	seen := map[int]int{}
	lastOffset := map[int]int64{}
	handler := func(_ context.Context, m client.FetchedMessage) error {
		mu.Lock()
		defer mu.Unlock()
		if prev, ok := lastOffset[m.Partition]; ok && m.Offset <= prev {
			t.Errorf("partition %d: offset %d after %d (order broken)", m.Partition, m.Offset, prev)
		}
		lastOffset[m.Partition] = m.Offset
		seen[msgN(t, m)]++
		return nil
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	cs := client.NewConsumer(c, group, []string{topic}, client.ConsumerPollWait(200*time.Millisecond), client.ConsumerLogger(testLogger(t)))
	stop := runConsumer(t, func(ctx context.Context) error { return cs.Run(ctx, handler) })
	waitFor(t, 20*time.Second, "30 messages", func() bool { return count() == 30 })
	waitFor(t, 10*time.Second, "offsets committed", func() bool {
		offs, _ := groupState(t, c, group, topic)
		return offs[0] == 10 && offs[1] == 10 && offs[2] == 10
	})
	if _, members := groupState(t, c, group, topic); members != 1 {
		t.Fatalf("live members %d, want 1", members)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, members := groupState(t, c, group, topic); members != 0 {
		t.Fatalf("live members after Run returned: %d, want 0 (graceful leave)", members)
	}
	for n, k := range seen {
		if k != 1 {
			t.Errorf("message %d handled %d times", n, k)
		}
	}

	// A new consumer of the group starts after the committed offsets: only new messages.
	produceN(t, c, topic, 3, 30, 6)
	clear(seen)
	cs2 := client.NewConsumer(c, group, []string{topic}, client.ConsumerPollWait(200*time.Millisecond), client.ConsumerLogger(testLogger(t)))
	stop2 := runConsumer(t, func(ctx context.Context) error { return cs2.Run(ctx, handler) })
	waitFor(t, 20*time.Second, "6 new messages", func() bool { return count() == 6 })
	if err := stop2(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for n := range seen {
		if n < 30 {
			t.Errorf("message %d delivered again after its commit", n)
		}
	}
	// An unknown topic is a permanent error: Run returns it.
	bad := client.NewConsumer(c, group+"x", []string{"no-such-topic-" + group}, client.ConsumerLogger(testLogger(t)))
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := bad.Run(rctx, handler); err == nil || rctx.Err() != nil {
		t.Fatalf("Run on an unknown topic: %v (want an error before the deadline)", err)
	}
}

func TestConsumerRetriesDeadLetterAndReplay(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	c := srv.client()
	ctx := context.Background()
	topic, group, other := uniqueName(t, "pay."), uniqueName(t, "g"), uniqueName(t, "other")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	// 10 messages; n=3 and n=6 fail until "fixed".
	produceN(t, c, topic, 2, 0, 10)
	var mu sync.Mutex
	fixed := false
	attempts := map[int]int{}
	handled := map[int]int{}
	handledHeaders := map[int]map[string]string{}
	handler := func(_ context.Context, m client.FetchedMessage) error {
		n := msgN(t, m)
		mu.Lock()
		defer mu.Unlock()
		attempts[n]++
		if (n == 3 || n == 6) && !fixed {
			return fmt.Errorf("ledger rejects transfer %d", n)
		}
		handled[n]++
		handledHeaders[n] = m.Headers
		return nil
	}
	otherSeen := map[int]int{}
	otherHandler := func(_ context.Context, m client.FetchedMessage) error {
		mu.Lock()
		defer mu.Unlock()
		otherSeen[msgN(t, m)]++
		return nil
	}
	opts := []client.ConsumerOption{client.ConsumerPollWait(200 * time.Millisecond), client.ConsumerLogger(testLogger(t)),
		client.ConsumerRetry(client.RetryPolicy{Attempts: 3, Backoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})}
	stop := runConsumer(t, func(ctx context.Context) error {
		return client.NewConsumer(c, group, []string{topic}, opts...).Run(ctx, handler)
	})
	stopOther := runConsumer(t, func(ctx context.Context) error {
		return client.NewConsumer(c, other, []string{topic}, opts...).Run(ctx, otherHandler)
	})
	waitFor(t, 20*time.Second, "both groups through the topic", func() bool {
		a, _ := groupState(t, c, group, topic)
		b, _ := groupState(t, c, other, topic)
		return a[0] == 5 && a[1] == 5 && b[0] == 5 && b[1] == 5
	})
	mu.Lock()
	if attempts[3] != 3 || attempts[6] != 3 || len(handled) != 8 {
		t.Fatalf("attempts %v, handled %v: want 3 attempts of 3 and 6, 8 handled", attempts, handled)
	}
	mu.Unlock()

	// The dead letters: in <topic>.DLQ, same partition, headers naming the failure.
	dlq := client.DLQTopic(topic)
	var letters []client.FetchedMessage
	for p := range 2 {
		res, err := c.Fetch(ctx, dlq, p, client.FetchOptions{})
		if err != nil {
			t.Fatalf("fetch %s/%d: %v", dlq, p, err)
		}
		letters = append(letters, res.Messages...)
	}
	if len(letters) != 2 {
		t.Fatalf("dead letters: %d, want 2: %+v", len(letters), letters)
	}
	for _, l := range letters {
		n := msgN(t, l)
		h := l.Headers
		want := map[string]string{
			client.HeaderDLQTopic: topic, client.HeaderDLQPartition: fmt.Sprint(n % 2), client.HeaderDLQOffset: fmt.Sprint(n / 2),
			client.HeaderDLQAttempts: "3", client.HeaderDLQGroup: group, client.HeaderDLQError: fmt.Sprintf("ledger rejects transfer %d", n),
		}
		for k, v := range want {
			if h[k] != v {
				t.Errorf("dead letter of %d: header %s = %q, want %q (headers %v)", n, k, h[k], v, h)
			}
		}
		if l.Partition != n%2 {
			t.Errorf("dead letter of %d in partition %d, want %d", n, l.Partition, n%2)
		}
	}

	// Fix the cause, replay: only the group that dead-lettered them handles them again.
	mu.Lock()
	fixed = true
	mu.Unlock()
	code, out, errOut := imago(t, srv, "", "dlq", "replay", topic)
	if code != exitOK || !strings.Contains(out, "replayed 2 dead letters") {
		t.Fatalf("dlq replay: exit %d\n%s\n%s", code, out, errOut)
	}
	waitFor(t, 20*time.Second, "replayed messages handled", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return handled[3] == 1 && handled[6] == 1
	})
	waitFor(t, 20*time.Second, "the other group past the replays", func() bool {
		b, _ := groupState(t, c, other, topic)
		return b[0] == 6 && b[1] == 6
	})
	mu.Lock()
	if h := handledHeaders[3]; h[client.HeaderReplayGroup] != group || !strings.HasPrefix(h[client.HeaderReplayedFrom], dlq+"/") || h[client.HeaderDLQError] != "" {
		t.Errorf("replayed message headers: %v", h)
	}
	for n, k := range otherSeen {
		if k != 1 {
			t.Errorf("group %s handled message %d %d times (replays are not for it)", other, n, k)
		}
	}
	mu.Unlock()
	// A second replay finds nothing new; --from earliest would put them back again, but the
	// idempotency keys make that a no-op on the topic.
	code, out, _ = imago(t, srv, "", "dlq", "replay", topic, "-o", "json")
	if code != exitOK || !strings.Contains(out, `"replayed": 0`) {
		t.Fatalf("second dlq replay: exit %d\n%s", code, out)
	}
	before, _ := c.DescribeTopic(ctx, topic)
	if code, out, errOut = imago(t, srv, "", "dlq", "replay", topic, "--from", "earliest"); code != exitOK {
		t.Fatalf("dlq replay --from earliest: exit %d\n%s\n%s", code, out, errOut)
	}
	after, _ := c.DescribeTopic(ctx, topic)
	for i := range before.Partitions {
		if before.Partitions[i].EndOffset != after.Partitions[i].EndOffset {
			t.Errorf("replaying again stored new messages in partition %d: end %d -> %d", i, before.Partitions[i].EndOffset, after.Partitions[i].EndOffset)
		}
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if err := stopOther(); err != nil {
		t.Fatal(err)
	}

	// Dead letters off: the failure stops Run with a *HandlerError, and nothing is skipped.
	produceN(t, c, topic, 2, 100, 2)
	mu.Lock()
	fixed = false
	mu.Unlock()
	failing := func(_ context.Context, m client.FetchedMessage) error { return errors.New("always") }
	strict := client.NewConsumer(c, group, []string{topic}, append(opts, client.ConsumerDeadLetter(false))...)
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err := strict.Run(rctx, failing)
	var he *client.HandlerError
	if !errors.As(err, &he) || he.Attempts != 3 {
		t.Fatalf("Run with dead letters off: %v, want a *HandlerError after 3 attempts", err)
	}
	if offs, members := groupState(t, c, group, topic); offs[0] != 6 || offs[1] != 6 || members != 0 {
		t.Fatalf("after the failure: offsets %v members %d, want 6/6 and 0", offs, members)
	}
}

func TestConsumerRebalance(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	c := srv.client()
	ctx := context.Background()
	topic, group := uniqueName(t, "reb."), uniqueName(t, "g")
	const parts, total = 4, 400
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[int]int{}
	by := map[string]map[int]bool{} // consumer -> partitions it handled
	mk := func(name string) client.Handler {
		return func(_ context.Context, m client.FetchedMessage) error {
			mu.Lock()
			defer mu.Unlock()
			seen[msgN(t, m)]++
			if by[name] == nil {
				by[name] = map[int]bool{}
			}
			by[name][m.Partition] = true
			return nil
		}
	}
	opts := []client.ConsumerOption{client.ConsumerPollWait(100 * time.Millisecond), client.ConsumerMaxMessages(10),
		client.ConsumerSessionTimeout(3 * time.Second), client.ConsumerLogger(testLogger(t))}
	a := client.NewConsumer(c, group, []string{topic}, opts...)
	b := client.NewConsumer(c, group, []string{topic}, opts...)
	stopA := runConsumer(t, func(ctx context.Context) error { return a.Run(ctx, mk("a")) })
	stopB := runConsumer(t, func(ctx context.Context) error { return b.Run(ctx, mk("b")) })
	waitFor(t, 10*time.Second, "two members", func() bool {
		_, n := groupState(t, c, group, topic)
		return n == 2
	})
	produceN(t, c, topic, parts, 0, total/2)
	waitFor(t, 20*time.Second, "first half handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == total/2 })
	mu.Lock()
	if len(by["a"]) == 0 || len(by["b"]) == 0 || len(by["a"])+len(by["b"]) != parts {
		t.Errorf("partitions handled by a %v and b %v: want the 4 shared between both", by["a"], by["b"])
	}
	mu.Unlock()
	// a leaves; b takes every partition and handles the rest.
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	clear(by)
	mu.Unlock()
	produceN(t, c, topic, parts, total/2, total/2)
	waitFor(t, 20*time.Second, "every message handled", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == total })
	mu.Lock()
	if len(by["a"]) != 0 || len(by["b"]) != parts {
		t.Errorf("after a left: a handled %v, b handled %v; want b alone on all 4", by["a"], by["b"])
	}
	for n, k := range seen {
		if k != 1 {
			t.Errorf("message %d handled %d times (a left gracefully after committing)", n, k)
		}
	}
	mu.Unlock()
	waitFor(t, 10*time.Second, "offsets at the end", func() bool {
		offs, _ := groupState(t, c, group, topic)
		for p := range parts {
			if offs[p] != total/parts {
				return false
			}
		}
		return true
	})
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
}

// A member whose handler outlives its session is removed by the server; the consumer notices
// (404 unknown_member on commit or poll), joins again and goes on. The message whose commit
// was refused is delivered again: at least once.
func TestConsumerRejoinsAfterSessionTimeout(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	c := srv.client()
	ctx := context.Background()
	topic, group := uniqueName(t, "slow."), uniqueName(t, "g")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	produceN(t, c, topic, 1, 0, 5)
	var mu sync.Mutex
	seen := map[int]int{}
	handler := func(ctx context.Context, m client.FetchedMessage) error {
		n := msgN(t, m)
		mu.Lock()
		first := seen[n] == 0
		seen[n]++
		mu.Unlock()
		if n == 2 && first {
			time.Sleep(2500 * time.Millisecond) // past the 1s session timeout
		}
		return nil
	}
	cs := client.NewConsumer(c, group, []string{topic}, client.ConsumerSessionTimeout(time.Second),
		client.ConsumerMaxMessages(5), client.ConsumerPollWait(200*time.Millisecond), client.ConsumerLogger(testLogger(t)))
	stop := runConsumer(t, func(ctx context.Context) error { return cs.Run(ctx, handler) })
	waitFor(t, 20*time.Second, "all handled and committed after the rejoin", func() bool {
		offs, _ := groupState(t, c, group, topic)
		return offs[0] == 5
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	// The batch's commit was refused (the member was gone), so the new member got the whole
	// batch again.
	for n := range 5 {
		if seen[n] != 2 {
			t.Errorf("message %d handled %d times, want 2 (handled, commit refused, handled again): %v", n, seen[n], seen)
		}
	}
}
