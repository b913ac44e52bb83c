package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/offsetdb"
)

// The tests of this file throw away the answer of a group poll after the server sent it (the
// transport reads it and reports a cut connection): a real connection cut exactly after the
// server wrote its answer cannot be produced on demand. The server has then moved the
// member's cursor past those messages; the consumer's next poll must get them again, so that
// every message is handled and nothing is committed past a message no handler saw.

// startGroupsServer starts a server with an offset store of its own.
func startGroupsServer(t *testing.T) *imagoServer {
	t.Helper()
	offs, err := offsetdb.OpenFile(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { offs.Close() })
	return startImago(t, "", gateway.Options{Offsets: offs, Logger: quietLogger()})
}

// lossyPolls returns an HTTP client that throws away the answer of the first group poll for
// which lose, given the poll's number (from 1) and its decoded answer, says true. lost is
// closed then.
func lossyPolls(lose func(n int64, ans *client.GroupMessages) bool) (hc *http.Client, polls *atomic.Int64, lost chan struct{}) {
	polls = new(atomic.Int64)
	lost = make(chan struct{})
	var once sync.Once
	hc = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil || r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/messages") || !strings.Contains(r.URL.Path, "/members/") {
			return resp, err
		}
		n := polls.Add(1)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		var ans client.GroupMessages
		if resp.StatusCode == http.StatusOK && jsonUnmarshal(body, &ans) == nil && lose(n, &ans) {
			dropped := false
			once.Do(func() { dropped = true; close(lost) })
			if dropped {
				return nil, errors.New("connection reset by peer (injected after the server answered)")
			}
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return resp, nil
	})}
	return hc, polls, lost
}

// handledLog records which offsets of which partitions a handler saw, and signals when it
// holds a given number of distinct ones.
type handledLog struct {
	mu      sync.Mutex
	seen    map[client.Assignment]map[int64]int
	changed chan struct{}
}

func newHandledLog() *handledLog {
	return &handledLog{seen: map[client.Assignment]map[int64]int{}, changed: make(chan struct{}, 1)}
}

func (h *handledLog) add(m client.FetchedMessage) {
	h.mu.Lock()
	tp := client.Assignment{Topic: m.Topic, Partition: m.Partition}
	if h.seen[tp] == nil {
		h.seen[tp] = map[int64]int{}
	}
	h.seen[tp][m.Offset]++
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
}

// distinct counts the distinct messages handled.
func (h *handledLog) distinct() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, offs := range h.seen {
		n += len(offs)
	}
	return n
}

func (h *handledLog) String() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var parts []string
	for tp, offs := range h.seen {
		var o []int64
		for off := range offs {
			o = append(o, off)
		}
		slices.Sort(o)
		parts = append(parts, fmt.Sprintf("%s/%d: %v", tp.Topic, tp.Partition, o))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// waitFor waits until n distinct messages were handled, or fails the test when ctx ends
// first, saying what was handled and what the group committed.
func (h *handledLog) waitFor(ctx context.Context, t *testing.T, n int, c *client.Client, group string) {
	t.Helper()
	for h.distinct() < n {
		select {
		case <-h.changed:
		case <-ctx.Done():
			gctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			g, err := c.GroupOffsets(gctx, group)
			var committed any
			if g != nil {
				committed = g.Offsets
			}
			t.Fatalf("the consumer handled %s, want %d messages; the group committed %+v (err %v)", h, n, committed, err)
		}
	}
}

// wantEachOnce checks that every offset of want was handled exactly once, and nothing else.
func (h *handledLog) wantEachOnce(t *testing.T, want map[client.Assignment][]int64) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for tp, offs := range want {
		for _, off := range offs {
			if n := h.seen[tp][off]; n != 1 {
				t.Errorf("%s/%d offset %d handled %d times, want once", tp.Topic, tp.Partition, off, n)
			}
		}
		if len(h.seen[tp]) != len(offs) {
			t.Errorf("%s/%d: handled %d distinct offsets, want %d", tp.Topic, tp.Partition, len(h.seen[tp]), len(offs))
		}
	}
}

// runConsumer runs cs with a handler that records into a new handledLog; stop ends the run
// and returns Run's error (it may be called more than once).
func runConsumer(ctx context.Context, cs *client.Consumer) (h *handledLog, stop func() error) {
	h = newHandledLog()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- cs.Run(rctx, func(_ context.Context, m client.FetchedMessage) error {
			h.add(m)
			return nil
		})
	}()
	return h, sync.OnceValue(func() error { cancel(); return <-done })
}

func produceN(ctx context.Context, t *testing.T, c *client.Client, topic string, partition, n int) {
	t.Helper()
	var msgs []client.Message
	for range n {
		msgs = append(msgs, client.Message{Value: []byte(`"m"`), Partition: client.Ptr(partition)})
	}
	if _, err := c.Produce(ctx, topic, msgs, client.ProduceOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestConsumerRecoversALostPollAnswer: the answer of a poll that carried messages is lost,
// with nothing produced after it. The consumer's next poll says where it is, so the server
// reads those messages again: every message is handled, without a rebalance or a later
// message to reveal the gap.
func TestConsumerRecoversALostPollAnswer(t *testing.T) {
	testConsumerRecoversALostAnswer(t, 2) // the first poll delivers 0..2, the second 3..5: lose that one
}

// TestConsumerRecoversALostFirstPollAnswer: the answer of the consumer's first poll after it
// joined is lost, before the consumer had handled anything, so it has no position to send for
// the partition. Its next poll says its positions are complete, so the server reads the
// partition again from where the member started it: the lost messages are handled, not
// committed past.
func TestConsumerRecoversALostFirstPollAnswer(t *testing.T) {
	testConsumerRecoversALostAnswer(t, 1)
}

func testConsumerRecoversALostAnswer(t *testing.T, lose int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startGroupsServer(t)
	c := client.New(srv.URL)
	topic := uniqueTopic("lost.")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	produceN(ctx, t, c, topic, 0, 6)

	lossy, polls, lost := lossyPolls(func(n int64, ans *client.GroupMessages) bool { return n == lose && len(ans.Messages) > 0 })
	group := fmt.Sprintf("lost-answer-%d", lose)
	cs := client.NewConsumer(client.New(srv.URL, client.WithHTTPClient(lossy)), group, []string{topic},
		client.ConsumerMaxMessages(3), client.ConsumerPollWait(100*time.Millisecond), client.ConsumerLogger(quietLogger()))
	h, stop := runConsumer(ctx, cs)
	h.waitFor(ctx, t, 6, c, group)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	default:
		t.Fatalf("%d polls: the answer of poll %d was never lost", polls.Load(), lose)
	}
	tp := client.Assignment{Topic: topic, Partition: 0}
	h.wantEachOnce(t, map[client.Assignment][]int64{tp: {0, 1, 2, 3, 4, 5}})
}

// TestConsumerRecoversALostAnswerOfAGainedPartition: a consumer that has handled messages of
// its own partition gains a second one in a rebalance (the other member leaves), and the
// answer carrying the gained partition's first messages is lost: the consumer did not even
// know it owned that partition. Its next poll says its positions are complete (one for its
// own partition, none for the other), so the server reads the gained partition again from the
// group's committed offset.
func TestConsumerRecoversALostAnswerOfAGainedPartition(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv := startGroupsServer(t)
	c := client.New(srv.URL)
	topic := uniqueTopic("gained.")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	const group = "lost-gained"
	// The other member joins first and never polls (its session outlasts the test).
	other, err := c.JoinGroup(ctx, group, client.JoinGroupRequest{Topics: []string{topic}, SessionTimeoutMS: 60000})
	if err != nil {
		t.Fatal(err)
	}

	gained := atomic.Int64{}
	gained.Store(-1)
	lossy, _, lost := lossyPolls(func(_ int64, ans *client.GroupMessages) bool {
		g := gained.Load()
		return g >= 0 && slices.ContainsFunc(ans.Messages, func(m client.FetchedMessage) bool { return int64(m.Partition) == g })
	})
	cs := client.NewConsumer(client.New(srv.URL, client.WithHTTPClient(lossy)), group, []string{topic},
		client.ConsumerPollWait(100*time.Millisecond), client.ConsumerLogger(quietLogger()))
	h, stop := runConsumer(ctx, cs)
	defer stop()

	// Once the consumer is a member, each of the two owns one partition.
	var own, theirs int
	for {
		g, err := c.GroupOffsets(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(g.Members, func(m api.GroupMember) bool { return m.MemberID == other.MemberID })
		if len(g.Members) == 2 && i >= 0 && len(g.Members[i].Assignments) == 1 {
			theirs = g.Members[i].Assignments[0].Partition
			own = 1 - theirs
			break
		}
		if !sleepCtx(ctx, 20*time.Millisecond) { // polling the group's state: no event to wait on
			t.Fatalf("the consumer never joined beside the other member: %v", ctx.Err())
		}
	}
	produceN(ctx, t, c, topic, own, 3)
	h.waitFor(ctx, t, 3, c, group)

	// The other member's partition holds messages; it leaves, and the consumer gains it.
	produceN(ctx, t, c, topic, theirs, 3)
	gained.Store(int64(theirs))
	if err := c.LeaveGroup(ctx, group, other.MemberID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lost:
	case <-ctx.Done():
		t.Fatalf("the answer carrying partition %d was never lost; handled %s", theirs, h)
	}
	h.waitFor(ctx, t, 6, c, group)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	h.wantEachOnce(t, map[client.Assignment][]int64{
		{Topic: topic, Partition: own}:    {0, 1, 2},
		{Topic: topic, Partition: theirs}: {0, 1, 2},
	})
}

// sleepCtx waits d or until ctx ends; it reports whether the full wait passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
