package groups

import (
	"context"
	"slices"
	"testing"

	"github.com/imagomq/imago/broker"
)

// TestPositionsRecoverALostAnswer: a poll whose answer never reached the client has moved
// the member's cursor past its messages. The next poll, sent with the client's position,
// reads them again; a position below what the member committed, at or past the cursor, or
// of a partition it does not own changes nothing.
func TestPositionsRecoverALostAnswer(t *testing.T) {
	c, b := newTestCoordinator(t)
	ctx := context.Background()
	var msgs []broker.Message
	for i := range 5 {
		msgs = append(msgs, broker.Message{Value: []byte{'0' + byte(i)}})
	}
	if _, err := b.Produce(ctx, "b", msgs, ""); err != nil { // partition 0, offsets 0..4
		t.Fatal(err)
	}
	j, err := c.Join(clustered("g", "b"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Touch("g", j.MemberID)
	if err != nil {
		t.Fatal(err)
	}
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

// TestPositionsBelowANewOwnersStart: a partition that moved away and came back starts at
// the committed offset; a position the client kept from its earlier ownership, below that
// offset, does not move it back.
func TestPositionsBelowANewOwnersStart(t *testing.T) {
	c, b := newTestCoordinator(t)
	ctx := context.Background()
	var msgs []broker.Message
	for i := range 6 {
		msgs = append(msgs, broker.Message{Value: []byte{'0' + byte(i)}})
	}
	if _, err := b.Produce(ctx, "b", msgs, ""); err != nil {
		t.Fatal(err)
	}
	j1, err := c.Join(clustered("g", "b"))
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := c.Touch("g", j1.MemberID)
	p := Partition{"b", 0}
	if _, err := c.Poll(ctx, m1, Limits{MaxMessages: 2, MaxBytes: 1 << 20}); err != nil { // 0, 1
		t.Fatal(err)
	}
	// The partition goes to a second member (member ids sort; join until the new one owns it).
	var j2 Joined
	for {
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
