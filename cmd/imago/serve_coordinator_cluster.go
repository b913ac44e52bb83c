package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/replica"
	"github.com/imagomq/imago/xa"
)

// In cluster mode the XA coordinator runs on the serving leader only, under one cluster-wide
// node id, and moves with leadership: when this member starts serving a term it opens the
// coordinator (whose start is its normal recovery: the decisions are replicated log records,
// so it finds every decision any earlier leader made), and when it stops serving it closes
// it. The gateway talks to leaderCoordinator, which answers ErrNotLeader while no coordinator
// runs here (the gateway forwards global transactions to the leader anyway; this covers the
// moment leadership moves).
//
// Fencing: the coordinator holds a lease on its node id in every database it acts on
// (xa/lease.go). A new leader's coordinator cannot open while the old one still holds it,
// so two coordinators never act on one database at once; a SIGSTOPped old leader keeps its
// leases until it runs again (and then closes its coordinator at once: it no longer leads),
// and until then global transactions answer 503 on the new leader.

// clusterCoordinatorID is the coordinator node id of a cluster whose configuration names none:
// the same on every member (derived from the bootstrap peers), 16 lowercase hex digits.
func clusterCoordinatorID(cl config.Cluster) string {
	ids := make([]uint64, 0, len(cl.Peers))
	for _, p := range cl.Peers {
		ids = append(ids, p.ID)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	h := fnv.New64a()
	fmt.Fprintf(h, "imago-cluster-coordinator:%v", ids)
	return fmt.Sprintf("%016x", h.Sum64())
}

type leaderCoordinator struct {
	open    func(context.Context) (*xa.Coordinator, error)
	drivers map[string]string
	member  *replica.Member
	log     *slog.Logger

	cur  atomic.Pointer[xa.Coordinator]
	mu   sync.Mutex // serializes open and close
	term uint64     // the term cur was opened in

	cancel context.CancelFunc
	done   chan struct{}
}

func newLeaderCoordinator(open func(context.Context) (*xa.Coordinator, error), drivers map[string]string, m *replica.Member, log *slog.Logger) *leaderCoordinator {
	return &leaderCoordinator{open: open, drivers: drivers, member: m, log: log, done: make(chan struct{})}
}

// start runs the watch that opens and closes the coordinator with leadership.
func (l *leaderCoordinator) start(ctx context.Context) {
	ctx, l.cancel = context.WithCancel(ctx)
	go l.watch(ctx)
}

func (l *leaderCoordinator) watch(ctx context.Context) {
	defer close(l.done)
	wait := 50 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = 50 * time.Millisecond
		st := l.member.Status()
		l.mu.Lock()
		c := l.cur.Load()
		switch {
		case st.Serving && (c == nil || l.term != st.Term):
			if c != nil {
				l.closeLocked("leadership moved to a new term")
			}
			nc, err := l.open(ctx)
			if err != nil {
				l.log.Warn("leader: the XA coordinator did not open yet; retrying", "term", st.Term, "err", err)
				wait = time.Second
			} else {
				l.term = st.Term
				l.cur.Store(nc)
				l.log.Info("leader: XA coordinator running (recovery done)", "term", st.Term, "node", nc.NodeID())
			}
		case !st.Serving && c != nil:
			l.closeLocked("this member no longer leads")
		}
		l.mu.Unlock()
	}
}

func (l *leaderCoordinator) closeLocked(why string) {
	c := l.cur.Swap(nil)
	if c == nil {
		return
	}
	if err := c.Close(); err != nil {
		l.log.Warn("closing the XA coordinator", "reason", why, "err", err)
	} else {
		l.log.Info("XA coordinator closed", "reason", why)
	}
}

// Close stops the watch and the coordinator.
func (l *leaderCoordinator) Close() error {
	if l.cancel != nil {
		l.cancel()
		<-l.done
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closeLocked("shutting down")
	return nil
}

func (l *leaderCoordinator) get() (*xa.Coordinator, error) {
	if c := l.cur.Load(); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("%w: the XA coordinator runs on the leader", broker.ErrNotLeader)
}

func (l *leaderCoordinator) Run(ctx context.Context, opts xa.BeginOptions, fn func(ctx context.Context, tx *xa.GlobalTx) error) (xa.TxInfo, error) {
	c, err := l.get()
	if err != nil {
		return xa.TxInfo{}, err
	}
	return c.Run(ctx, opts, fn)
}

func (l *leaderCoordinator) Get(id string) (xa.TxInfo, error) {
	c, err := l.get()
	if err != nil {
		return xa.TxInfo{}, err
	}
	return c.Get(id)
}

func (l *leaderCoordinator) Query(q xa.ListQuery) xa.ListResult {
	c, err := l.get()
	if err != nil {
		return xa.ListResult{}
	}
	return c.Query(q)
}

func (l *leaderCoordinator) Resolve(ctx context.Context, id string, d xa.Decision, by string) (xa.TxInfo, error) {
	c, err := l.get()
	if err != nil {
		return xa.TxInfo{}, err
	}
	return c.Resolve(ctx, id, d, by)
}

// Driver answers from the configuration: the operations are checked against it at start,
// before any coordinator runs.
func (l *leaderCoordinator) Driver(resource string) (string, error) {
	if d, ok := l.drivers[resource]; ok {
		return d, nil
	}
	return "", fmt.Errorf("%w: %q", xa.ErrUnknownResource, resource)
}

// Ping checks the running coordinator; a member that does not lead has none to check (its
// readiness is the cluster's: /readyz checks for a leader).
func (l *leaderCoordinator) Ping(ctx context.Context) error {
	if c := l.cur.Load(); c != nil {
		return c.Ping(ctx)
	}
	return nil
}

// collector exposes the running coordinator's metrics (none while this member does not lead).
type leaderCollector struct{ l *leaderCoordinator }

func (lc leaderCollector) Describe(chan<- *prometheus.Desc) {} // unchecked: the set moves with leadership

func (lc leaderCollector) Collect(ch chan<- prometheus.Metric) {
	if c := lc.l.cur.Load(); c != nil {
		c.Collector().Collect(ch)
	}
}
