package groups

import (
	"context"
	"slices"
	"testing"
	"time"
)

// TestBroadcastConsumerResumesWhereItStarted: a named broadcast consumer (ConsumerID) starting
// at the latest offset polls a partition that has no new message yet, and goes (a restart)
// before it had anything to commit there. Messages produced while it is away come to its next
// member: it resumes where the consumer started, not at the end at its new join, which would
// skip them although the consumer was subscribed before they came. A member without a
// ConsumerID, whose offsets nobody can resume, stores nothing.
func TestBroadcastConsumerResumesWhereItStarted(t *testing.T) {
	c, b := newTestCoordinator(t)
	ctx := context.Background()
	produceToB(t, b, 2) // before the first join: not for a consumer starting at the latest
	named := JoinRequest{Group: "cache", Topics: []string{"b"}, Mode: Broadcast, SessionTimeout: time.Minute,
		From: FromLatest, ConsumerID: "node-1"}
	anon := named
	anon.ConsumerID = ""

	j1, m1 := joinLive(t, c, named)
	ja, ma := joinLive(t, c, anon)
	for _, m := range []*Member{m1, ma} {
		ans, err := c.Poll(ctx, m, Limits{MaxMessages: 10, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if got := polledOffsets(ans); len(got) != 0 {
			t.Fatalf("first poll of %s: offsets %v, want none (it starts at the end, 2)", m.ID(), got)
		}
	}
	if offs, err := c.Store().List(ctx, "cache"+BroadcastSep+ja.MemberID); err != nil || len(offs) != 0 {
		t.Fatalf("offsets stored for the member without a consumer id: %v, %v; want none", offs, err)
	}
	// The consumer goes without a commit (a crash: its session would end; leaving is the same).
	if err := c.Leave("cache", j1.MemberID); err != nil {
		t.Fatal(err)
	}
	produceToB(t, b, 3) // offsets 2, 3, 4, while node-1 is away

	_, m2 := joinLive(t, c, named)
	ans, err := c.Poll(ctx, m2, Limits{MaxMessages: 10, MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := polledOffsets(ans), []int64{2, 3, 4}; !slices.Equal(got, want) {
		t.Fatalf("node-1 after its restart: offsets %v, want %v (where it started, not the end at its new join)", got, want)
	}
}
