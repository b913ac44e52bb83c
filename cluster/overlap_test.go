package cluster

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// syncGate holds a MemLog's syncs while it is shut.
type syncGate struct {
	mu      sync.Mutex
	hold    chan struct{} // nil: syncs pass
	fail    error         // returned by the syncs after it is set
	entered chan struct{} // one value each time a sync starts waiting
}

func (g *syncGate) failWith(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fail = err
}

func newSyncGate() *syncGate { return &syncGate{entered: make(chan struct{}, 64)} }

func (g *syncGate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.hold = make(chan struct{})
}

func (g *syncGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold != nil {
		close(g.hold)
		g.hold = nil
	}
}

func (g *syncGate) sync() error {
	g.mu.Lock()
	h := g.hold
	g.mu.Unlock()
	if h != nil {
		g.entered <- struct{}{}
		<-h
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fail
}

func (g *syncGate) waitEntered(t *testing.T, what string) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// startGated starts a cluster whose logs' syncs can be held (gates, by node id), waits for a
// leader, has every node apply a first entry ("warm"), and opens every gate at the end.
func startGated(t *testing.T) (*testCluster, map[uint64]*syncGate, *Node) {
	t.Helper()
	gates := map[uint64]*syncGate{}
	c := startChanCluster(t, func(c *testCluster) {
		// Held syncs stop a node's loop; ticks long enough that CheckQuorum never sees that as
		// a lost quorum (the election timeout is 10 ticks).
		c.tick = 50 * time.Millisecond
		c.onLog = func(id uint64, l *MemLog) {
			gates[id] = newSyncGate()
			l.FailSync = gates[id].sync
		}
	})
	t.Cleanup(func() {
		for _, g := range gates {
			g.open()
		}
	})
	l := c.leader(t, 0)
	if err := l.Propose(context.Background(), []byte("warm")); err != nil {
		t.Fatal(err)
	}
	// Caught up: a follower still being probed would get the next entries only from the
	// leader's next Ready, which a held sync delays.
	c.caughtUp(t, l.cfg.ID, "warm")
	return c, gates, l
}

// caughtUp waits until every node but the leader lid has applied an entry whose data is last
// as its last, and returns those nodes.
func (c *testCluster) caughtUp(t *testing.T, lid uint64, last string) []uint64 {
	t.Helper()
	var followers []uint64
	for id := range c.nodes {
		if id == lid {
			continue
		}
		followers = append(followers, id)
		waitFor(t, "the followers to apply "+last, func() bool {
			got := c.apps[id].entries()
			return len(got) > 0 && string(got[len(got)-1].Data) == last
		})
	}
	return followers
}

// A leader's entry whose acknowledgements arrive while the leader syncs its next round is
// applied (and its writer answered) during that sync, not after it; an entry the followers
// hold but the leader has not synced yet is not applied until the leader's sync ends.
func TestLeaderAppliesWhileSyncingTheNextRound(t *testing.T) {
	c, gates, l := startGated(t)
	lid := l.cfg.ID
	ctx := context.Background()
	var followers []uint64
	for id := range c.nodes {
		if id != lid {
			followers = append(followers, id)
			gates[id].shut() // the next sync each follower holds is A's
		}
	}

	errA := make(chan error, 1)
	go func() { errA <- l.Propose(ctx, []byte("A")) }()
	for _, id := range followers {
		gates[id].waitEntered(t, "a follower to sync A")
	}
	waitFor(t, "the leader to sync A", func() bool {
		d := c.logs[lid].Durable()
		return len(d) > 0 && string(d[len(d)-1].Data) == "A"
	})

	gates[lid].shut()
	errB := make(chan error, 1)
	go func() { errB <- l.Propose(ctx, []byte("B")) }()
	gates[lid].waitEntered(t, "the leader to sync B")
	for _, id := range followers {
		gates[id].open()
	}

	select {
	case err := <-errA:
		if err != nil {
			t.Fatalf("propose A: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("A, acknowledged by both followers, was not applied while the leader synced B: its commit waited for the next round's fsync")
	}
	// Both followers acknowledge B too, so raft counts it committed, but it is not durable on
	// the leader yet: it must not be applied there.
	waitFor(t, "the followers to sync B", func() bool {
		for _, id := range followers {
			d := c.logs[id].Durable()
			if len(d) == 0 || string(d[len(d)-1].Data) != "B" {
				return false
			}
		}
		return true
	})
	waitFor(t, "the leader to learn that B is committed", func() bool {
		return l.Status().Commit >= l.Status().Applied+1
	})
	for _, e := range c.apps[lid].entries() {
		if string(e.Data) == "B" {
			t.Fatalf("the leader applied B (index %d) before its own sync of B ended", e.Index)
		}
	}
	select {
	case err := <-errB:
		t.Fatalf("propose B returned (%v) before the leader's sync of B ended", err)
	default:
	}

	gates[lid].open()
	if err := <-errB; err != nil {
		t.Fatalf("propose B: %v", err)
	}
	want := c.apps[lid].entries()
	for id := range c.nodes {
		waitFor(t, "every node to apply B", func() bool { return len(c.apps[id].entries()) >= len(want) })
		got := c.apps[id].entries()
		for i := range want {
			if got[i].Index != want[i].Index || string(got[i].Data) != string(want[i].Data) {
				t.Fatalf("node %d applied %+v at position %d, the leader %+v", id, got[i], i, want[i])
			}
		}
	}
}

// A group proposed while the leader syncs a round is taken by raft at once (ProposeGroup
// returns) and goes into the next round, after the round's own entries.
func TestLeaderTakesProposalsWhileSyncing(t *testing.T) {
	c, gates, l := startGated(t)
	lid := l.cfg.ID
	term := l.Status().Term

	gates[lid].shut()
	chA, err := proposeGroup(l, term, "A")
	if err != nil {
		t.Fatalf("propose A: %v", err)
	}
	gates[lid].waitEntered(t, "the leader to sync A")
	type result struct {
		chans []<-chan error
		err   error
	}
	resB := make(chan result, 1)
	go func() {
		chans, err := proposeGroup(l, term, "B1", "B2")
		resB <- result{chans, err}
	}()
	var rb result
	select {
	case rb = <-resB:
		if rb.err != nil {
			t.Fatalf("propose B: %v", rb.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the group proposed while the leader synced A was not taken until the sync ended")
	}
	gates[lid].open()
	for i, ch := range append(chA, rb.chans...) {
		if err := <-ch; err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	got := c.apps[lid].entries()
	if n := len(got); n < 3 || string(got[n-3].Data) != "A" || string(got[n-2].Data) != "B1" || string(got[n-1].Data) != "B2" ||
		got[n-1].Index != got[n-3].Index+2 {
		t.Fatalf("the leader applied %+v last, want A, B1, B2 at consecutive indexes", got[max(0, n-3):])
	}
	want := got
	for id := range c.nodes {
		waitFor(t, "every node to apply B2", func() bool { return len(c.apps[id].entries()) >= len(want) })
		for i, e := range c.apps[id].entries()[:len(want)] {
			if e.Index != want[i].Index || string(e.Data) != string(want[i].Data) {
				t.Fatalf("node %d applied %+v at position %d, the leader %+v", id, e, i, want[i])
			}
		}
	}
}

// A leader whose fsync fails while its loop goes on stepping stops: the entry it was syncing
// is never applied there, its writer learns the outcome is unknown, and the others go on.
func TestLeaderStopsWhenTheOverlappedSyncFails(t *testing.T) {
	c, gates, l := startGated(t)
	lid := l.cfg.ID
	gates[lid].shut()
	chB, err := proposeGroup(l, l.Status().Term, "B")
	if err != nil {
		t.Fatalf("propose B: %v", err)
	}
	gates[lid].waitEntered(t, "the leader to sync B")
	// The followers acknowledge B meanwhile: raft on the leader counts it committed.
	for id := range c.nodes {
		if id == lid {
			continue
		}
		waitFor(t, "the followers to sync B", func() bool {
			d := c.logs[id].Durable()
			return len(d) > 0 && string(d[len(d)-1].Data) == "B"
		})
	}
	diskErr := errors.New("injected: the disk refused the fsync")
	gates[lid].failWith(diskErr)
	gates[lid].open()
	select {
	case <-l.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the leader did not stop after its fsync failed")
	}
	if err := <-chB[0]; !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("B's writer got %v, want ErrOutcomeUnknown", err)
	}
	if err := l.Status().Err; !errors.Is(err, diskErr) {
		t.Fatalf("the stopped leader reports %v, want the fsync's error", err)
	}
	for _, e := range c.apps[lid].entries() {
		if string(e.Data) == "B" {
			t.Fatalf("the leader applied B (index %d), which never became durable on its disk", e.Index)
		}
	}
	c.net.mu.Lock()
	c.net.cut[lid] = true
	c.net.mu.Unlock()
	n := c.leader(t, lid)
	if err := n.Propose(context.Background(), []byte("after")); err != nil {
		t.Fatalf("propose on the new leader %d: %v", n.cfg.ID, err)
	}
}

// proposeGroup proposes datas as one group with an outcome channel each (ProposeGroup).
func proposeGroup(n *Node, term uint64, datas ...string) ([]<-chan error, error) {
	ds := make([][]byte, len(datas))
	dones := make([]chan<- error, len(datas))
	outs := make([]<-chan error, len(datas))
	for i, d := range datas {
		ch := make(chan error, 1)
		ds[i], dones[i], outs[i] = []byte(d), ch, ch
	}
	if err := n.ProposeGroup(term, ds, dones); err != nil {
		return nil, err
	}
	return outs, nil
}
