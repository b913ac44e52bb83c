package groups

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/offsetdb"
)

// newTestCoordinator opens a real broker with topics a (2 partitions) and b (1), a real file
// offset store, and a started coordinator over them; all stop with the test.
func newTestCoordinator(t *testing.T) (*Coordinator, *broker.Broker) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	b := newTestBroker(t, log)
	store, err := offsetdb.OpenFile(t.TempDir(), log)
	if err != nil {
		t.Fatalf("open offset store: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	c := New(b, store, log)
	c.Start()
	t.Cleanup(c.Close)
	return c, b
}

// newTestBroker opens a real broker with topics a (2 partitions) and b (1), closed with the
// test.
func newTestBroker(t *testing.T, log *slog.Logger) *broker.Broker {
	t.Helper()
	bo := broker.NewOptions(t.TempDir())
	bo.Logger = log
	b, err := broker.Open(bo)
	if err != nil {
		t.Fatalf("open broker: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	for name, n := range map[string]int{"a": 2, "b": 1} {
		if _, err := b.CreateTopic(name, broker.TopicConfig{Partitions: n}); err != nil {
			t.Fatalf("create topic %s: %v", name, err)
		}
	}
	return b
}

func clustered(group string, topics ...string) JoinRequest {
	return JoinRequest{Group: group, Topics: topics, Mode: Clustered, SessionTimeout: time.Minute, From: FromEarliest}
}

// joinLive joins a member with req and returns it live (as Touch finds it).
func joinLive(t *testing.T, c *Coordinator, req JoinRequest) (Joined, *Member) {
	t.Helper()
	j, err := c.Join(req)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.Touch(req.Group, j.MemberID)
	if err != nil {
		t.Fatal(err)
	}
	return j, m
}

// TestJoinConflicts is a table of second joins to a group whose first member joined
// clustered on topic a.
func TestJoinConflicts(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  JoinRequest
		want error
	}{
		{"same mode and topics", clustered("g", "a"), nil},
		{"other mode", JoinRequest{Group: "g", Topics: []string{"a"}, Mode: Broadcast, SessionTimeout: time.Minute, From: FromLatest}, ErrModeConflict},
		{"other topics", clustered("g", "a", "b"), ErrTopicsConflict},
		{"unknown topic", clustered("g", "nope"), broker.ErrUnknownTopic},
		{"other group", clustered("h", "b"), nil},
		{"broadcast name too long", JoinRequest{Group: strings.Repeat("x", 200), Topics: []string{"a"}, Mode: Broadcast,
			SessionTimeout: time.Minute, ConsumerID: strings.Repeat("c", 60)}, &FieldError{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestCoordinator(t)
			if _, err := c.Join(clustered("g", "a")); err != nil {
				t.Fatal(err)
			}
			_, err := c.Join(tc.req)
			var fe *FieldError
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("join: %v", err)
			case tc.want == nil:
			case errors.As(tc.want, &fe):
				if !errors.As(err, &fe) || fe.Field != "consumer_id" {
					t.Fatalf("join: %v, want a FieldError on consumer_id", err)
				}
			case !errors.Is(err, tc.want):
				t.Fatalf("join: %v, want %v", err, tc.want)
			}
		})
	}
}

// TestRebalanceAndOwnership: a second member takes partitions from the first, which may
// then no longer commit them; its leave gives them back with the committed offset.
func TestRebalanceAndOwnership(t *testing.T) {
	c, b := newTestCoordinator(t)
	ctx := context.Background()
	var msgs []broker.Message
	for i := range 6 {
		msgs = append(msgs, broker.Message{Value: []byte{'0' + byte(i)}, Partition: i % 2})
	}
	if _, err := b.Produce(ctx, "a", msgs, ""); err != nil { // offsets 0..2 in both partitions
		t.Fatal(err)
	}
	j1, err := c.Join(clustered("g", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(j1.Partitions) != 2 || j1.Generation != 1 {
		t.Fatalf("first join: %+v", j1)
	}
	j2, err := c.Join(clustered("g", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(j2.Partitions) != 1 || j2.Generation != 2 {
		t.Fatalf("second join: %+v", j2)
	}
	lost := j2.Partitions[0]
	err = c.Commit(ctx, "g", j1.MemberID, []Offset{{Topic: lost.Topic, Partition: lost.Partition, Next: 1}})
	var oe *OwnerError
	if !errors.As(err, &oe) || !errors.Is(err, ErrNotOwner) || oe.Index != 0 {
		t.Fatalf("commit of a lost partition: %v, want an OwnerError", err)
	}
	if err := c.Commit(ctx, "g", j2.MemberID, []Offset{{Topic: lost.Topic, Partition: lost.Partition, Next: 1}}); err != nil {
		t.Fatalf("owner's commit: %v", err)
	}
	if err := c.Leave("g", j2.MemberID); err != nil {
		t.Fatal(err)
	}
	if err := c.Leave("g", j2.MemberID); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("second leave: %v, want ErrUnknownMember", err)
	}
	m1, err := c.Touch("g", j1.MemberID)
	if err != nil {
		t.Fatal(err)
	}
	got := map[Partition][]int64{}
	for range 2 {
		ans, err := c.Poll(ctx, m1, Limits{MaxMessages: 10, MaxBytes: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if ans.Generation != 3 || len(ans.Partitions) != 2 {
			t.Fatalf("poll after leave: generation %d, %d partitions", ans.Generation, len(ans.Partitions))
		}
		for _, bt := range ans.Batches {
			for _, m := range bt.Result.Messages {
				got[bt.Partition] = append(got[bt.Partition], m.Offset)
			}
		}
	}
	// The partition that came back starts at the offset committed by its previous owner.
	if first := got[lost]; len(first) == 0 || first[0] != 1 {
		t.Fatalf("partition %v came back at %v, want it to start at the committed offset 1", lost, first)
	}
}

// TestSessionTimeout: a silent member is removed by the sweeper and its partitions go to
// the member that is left.
func TestSessionTimeout(t *testing.T) {
	c, _ := newTestCoordinator(t)
	short := clustered("g", "a")
	short.SessionTimeout = MinSessionTimeout
	silent, err := c.Join(short)
	if err != nil {
		t.Fatal(err)
	}
	alive, err := c.Join(clustered("g", "a"))
	if err != nil {
		t.Fatal(err)
	}
	// Status reads without counting as a heartbeat (Touch would keep the member alive).
	deadline := time.Now().Add(10 * time.Second)
	var st Status
	for {
		if st, err = c.Status(context.Background(), "g"); err != nil {
			t.Fatal(err)
		}
		if len(st.Members) < 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the silent member was never removed")
		}
		time.Sleep(50 * time.Millisecond) // polling the coordinator's state: there is no event to wait on
	}
	if _, err := c.Touch("g", silent.MemberID); !errors.Is(err, ErrUnknownMember) {
		t.Fatalf("touch of the timed-out member: %v, want ErrUnknownMember", err)
	}
	if len(st.Members) != 1 || st.Members[0].ID != alive.MemberID || len(st.Members[0].Partitions) != 2 {
		t.Fatalf("after the timeout: %+v", st.Members)
	}
}

// TestCloseEndsLongPoll: Close ends a waiting poll at once, and is safe to repeat; a
// coordinator never started closes too.
func TestCloseEndsLongPoll(t *testing.T) {
	c, _ := newTestCoordinator(t)
	_, m := joinLive(t, c, clustered("g", "b"))
	done := make(chan error, 1)
	go func() {
		_, err := c.Poll(context.Background(), m, Limits{MaxMessages: 1, MaxBytes: 1 << 20, Wait: time.Minute})
		done <- err
	}()
	// The poll holds the member's poll slot while it waits; wait until it does.
	for !c.polling(m) {
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	c.Close()
	c.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("poll ended by Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the long poll")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("poll took %v after Close", d)
	}
	New(nil, nil, nil).Close()
}

// polling reports whether a poll of m is in progress.
func (c *Coordinator) polling(m *Member) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return m.polling > 0
}
