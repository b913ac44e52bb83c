package gateway

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// leaderWatch follows the leader this node knows, looking every interval (and at each
// scrape). It serves two purposes:
//
//   - imago_raft_leader_changes_total: each time the leader id becomes a non-zero id other than
//     the one seen before (A, none, A counts twice, as etcd's leader_changes_seen does);
//   - forwarded requests: changed returns a channel closed at the next change of the leader id
//     (to another node or to none), so that a request forwarded to a leader that stopped
//     answering (paused, partitioned) ends when the cluster has moved on, instead of waiting
//     for the client to give up.
type leaderWatch struct {
	c        Cluster
	interval time.Duration

	mu      sync.Mutex
	last    uint64
	next    chan struct{} // closed at the next change of last
	changes atomic.Uint64
}

func newLeaderWatch(c Cluster, interval time.Duration) *leaderWatch {
	w := &leaderWatch{c: c, interval: interval, next: make(chan struct{})}
	if leader, ok := c.Leader(); ok {
		w.last = leader.ID
		w.changes.Store(1)
	}
	return w
}

// look reads the leader, counts a change and wakes the forwards waiting for one. It holds mu
// while it reads, so that the watch and a scrape never act on a stale reading after a newer
// one.
func (w *leaderWatch) look() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lookLocked()
}

func (w *leaderWatch) lookLocked() {
	var id uint64
	if leader, ok := w.c.Leader(); ok {
		id = leader.ID
	}
	if id == w.last {
		return
	}
	if id != 0 {
		w.changes.Add(1)
	}
	w.last = id
	close(w.next)
	w.next = make(chan struct{})
}

// changedFrom returns a channel closed at the next change of the leader id after id, the
// leader a request is about to be forwarded to. When the watch has not seen id yet (it looks
// every interval), it looks now: a change it had not caught up with must not end the forward.
func (w *leaderWatch) changedFrom(id uint64) <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last != id {
		w.lookLocked()
	}
	return w.next
}

// run looks at the leader every interval until ctx ends.
func (w *leaderWatch) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.look()
		}
	}
}
