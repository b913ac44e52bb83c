package groups

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/offsetdb"
)

// TestPositionsRecoverALostAnswer: a poll whose answer never reached the client has moved
// the member's cursor past its messages. The next poll, sent with the client's position,
// reads them again; a position below what the member committed, at or past the cursor, or
// of a partition it does not own changes nothing.
func TestPositionsRecoverALostAnswer(t *testing.T) {
	c, b := newTestCoordinator(t)
	ctx := context.Background()
	produceToB(t, b, 5) // partition 0, offsets 0..4
	j, m := joinLive(t, c, clustered("g", "b"))
	p := Partition{"b", 0}
	poll := func(pos map[Partition]int64) []int64 {
		t.Helper()
		ans, err := c.Poll(ctx, m, Limits{MaxMessages: 2, MaxBytes: 1 << 20, Positions: pos})
		if err != nil {
			t.Fatal(err)
		}
		return polledOffsets(ans)
	}
	want := func(got []int64, w ...int64) {
		t.Helper()
		if !slices.Equal(got, w) {
			t.Fatalf("poll returned offsets %v, want %v", got, w)
		}
	}
	want(poll(nil), 0, 1)
	want(poll(map[Partition]int64{p: 2}), 2, 3) // this answer is "lost"
	want(poll(map[Partition]int64{p: 2}), 2, 3) // the client says it is still at 2
	// Positions of partitions the member does not own, past the cursor or negative change
	// nothing.
	want(poll(map[Partition]int64{{"a", 0}: 0, {"b", 7}: 0, p: 9}), 4)
	if err := c.Commit(ctx, "g", j.MemberID, []Offset{{Topic: "b", Partition: 0, Next: 3}}); err != nil {
		t.Fatal(err)
	}
	// Below the member's own commit: never read again.
	want(poll(map[Partition]int64{p: 1}))
	want(poll(map[Partition]int64{p: 3}), 3, 4)
	want(poll(map[Partition]int64{p: -1}))
}

// TestCompletePositionsRecoverALostFirstAnswer: the answer to the first poll of a partition
// never reached the client, which therefore has no position to send for it. Its next poll
// says its positions are complete (none for the partition): the cursor goes back to where
// the member started the partition, never below the member's own commits. Without
// PositionsComplete a partition without a position stays where it is.
func TestCompletePositionsRecoverALostFirstAnswer(t *testing.T) {
	c, b := newTestCoordinator(t)
	ctx := context.Background()
	produceToB(t, b, 5) // partition 0, offsets 0..4
	j, m := joinLive(t, c, clustered("g", "b"))
	p := Partition{"b", 0}
	poll := func(q Limits) []int64 {
		t.Helper()
		q.MaxMessages, q.MaxBytes = 2, 1<<20
		return polledOffsets(mustPoll(t, c, m, q))
	}
	want := func(got []int64, w ...int64) {
		t.Helper()
		if !slices.Equal(got, w) {
			t.Fatalf("poll returned offsets %v, want %v", got, w)
		}
	}
	want(poll(Limits{}), 0, 1) // "lost": the client has no position for b/0
	want(poll(Limits{PositionsComplete: true}), 0, 1)
	want(poll(Limits{PositionsComplete: true, Positions: map[Partition]int64{p: 2}}), 2, 3)
	want(poll(Limits{}), 4)
	want(poll(Limits{}))
	if err := c.Commit(ctx, "g", j.MemberID, []Offset{{Topic: "b", Partition: 0, Next: 3}}); err != nil {
		t.Fatal(err)
	}
	// Back to the member's own commit, not to where it started.
	want(poll(Limits{PositionsComplete: true}), 3, 4)
	// A position of a partition the member does not own rewinds nothing, and neither does a
	// complete set whose only position is at the cursor.
	want(poll(Limits{PositionsComplete: true, Positions: map[Partition]int64{{"a", 0}: 0, p: 5}}))
	if n := c.PollRewinds()["g"]; n != 2 {
		t.Fatalf("%d rewinds counted, want 2", n)
	}
}

// TestPositionsBelowANewOwnersStart: a partition that moved away and came back starts at
// the committed offset; a position the client kept from its earlier ownership, below that
// offset, does not move it back.
func TestPositionsBelowANewOwnersStart(t *testing.T) {
	c, b := newTestCoordinator(t)
	ctx := context.Background()
	produceToB(t, b, 6)
	_, m1 := joinLive(t, c, clustered("g", "b"))
	p := Partition{"b", 0}
	if _, err := c.Poll(ctx, m1, Limits{MaxMessages: 2, MaxBytes: 1 << 20}); err != nil { // 0, 1
		t.Fatal(err)
	}
	// The partition goes to a second member (member ids sort; join until the new one owns it).
	var j2 Joined
	for {
		var err error
		if j2, err = c.Join(clustered("g", "b")); err != nil {
			t.Fatal(err)
		}
		if len(j2.Partitions) == 1 {
			break
		}
		if err := c.Leave("g", j2.MemberID); err != nil {
			t.Fatal(err)
		}
	}
	m2, _ := c.Touch("g", j2.MemberID)
	if _, err := c.Poll(ctx, m2, Limits{MaxMessages: 4, MaxBytes: 1 << 20}); err != nil { // 0..3
		t.Fatal(err)
	}
	if err := c.Commit(ctx, "g", j2.MemberID, []Offset{{Topic: "b", Partition: 0, Next: 4}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Leave("g", j2.MemberID); err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]int64{{4, 5}, nil} {
		ans, err := c.Poll(ctx, m1, Limits{MaxMessages: 10, MaxBytes: 1 << 20, Positions: map[Partition]int64{p: 2}})
		if err != nil {
			t.Fatal(err)
		}
		if got := polledOffsets(ans); !slices.Equal(got, want) {
			t.Fatalf("poll %d after the partition came back: offsets %v, want %v (from the committed offset 4, not the stale position 2)", i+1, got, want)
		}
	}
}

// polledOffsets lists the offsets a poll returned, in order.
func polledOffsets(ans Polled) []int64 {
	var offs []int64
	for _, bt := range ans.Batches {
		for _, msg := range bt.Result.Messages {
			offs = append(offs, msg.Offset)
		}
	}
	return offs
}

// countingHandler counts the records whose message starts with prefix.
type countingHandler struct {
	prefix string
	n      *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.HasPrefix(r.Message, h.prefix) {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// TestPositionBelowRetainedStart: retention removed messages the member had not reached. The
// poll moves its cursor to the partition's new start (one warning); a client that keeps
// sending a position below that start does not move the cursor back there again, poll after
// poll.
func TestPositionBelowRetainedStart(t *testing.T) {
	var warned atomic.Int64
	log := slog.New(countingHandler{prefix: "retention removed messages", n: &warned})
	bo := broker.NewOptions(t.TempDir())
	bo.Logger = log
	bo.SegmentBytes, bo.IndexSegmentEntries, bo.RetentionBytes = 4096, 16, 2000
	bo.RetentionCheckInterval = time.Hour // run by hand below
	b, err := broker.Open(bo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if _, err := b.CreateTopic("b", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	store, err := offsetdb.OpenFile(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	c := New(b, store, log)
	c.Start()
	t.Cleanup(c.Close)
	ctx := context.Background()
	for i := range 200 {
		if _, err := b.Produce(ctx, "b", []broker.Message{{Value: []byte(fmt.Sprintf("v%03d", i))}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	_, m := joinLive(t, c, clustered("g", "b"))
	p := Partition{"b", 0}
	if got := polledOffsets(mustPoll(t, c, m, Limits{MaxMessages: 2, MaxBytes: 1 << 20})); !slices.Equal(got, []int64{0, 1}) {
		t.Fatalf("first poll: %v", got)
	}
	b.EnforceRetention()
	info, err := b.Topic("b")
	if err != nil {
		t.Fatal(err)
	}
	start := info.Partitions[0].StartOffset
	if start <= 2 {
		t.Fatalf("retention kept the partition from %d: the test needs it to drop past offset 2", start)
	}
	// The first poll finds its cursor below the start and moves it there (and answers
	// nothing); the next ones read on from the start.
	var got []int64
	for range 4 {
		got = append(got, polledOffsets(mustPoll(t, c, m, Limits{MaxMessages: 1, MaxBytes: 1 << 20, Positions: map[Partition]int64{p: 2}}))...)
	}
	if want := []int64{start, start + 1, start + 2}; !slices.Equal(got, want) {
		t.Fatalf("four polls with position 2 after retention kept %d..: %v, want %v", start, got, want)
	}
	if n := warned.Load(); n != 1 {
		t.Fatalf("%d retention warnings, want 1: the stale position moved the cursor below the start again", n)
	}
}

func mustPoll(t *testing.T, c *Coordinator, m *Member, q Limits) Polled {
	t.Helper()
	ans, err := c.Poll(context.Background(), m, q)
	if err != nil {
		t.Fatal(err)
	}
	return ans
}

// produceToB appends n one-byte messages to topic b in one batch.
func produceToB(t *testing.T, b *broker.Broker, n int) {
	t.Helper()
	var msgs []broker.Message
	for i := range n {
		msgs = append(msgs, broker.Message{Value: []byte{'0' + byte(i)}})
	}
	if _, err := b.Produce(context.Background(), "b", msgs, ""); err != nil {
		t.Fatal(err)
	}
}
