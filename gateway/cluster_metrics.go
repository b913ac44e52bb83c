package gateway

import (
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// raftCollector exposes the cluster member's state at scrape time (nothing when the server
// is not a cluster member):
//
//	raft_term                        the node's current term
//	raft_commit_index                the highest log index known committed
//	raft_applied_index               the highest log index applied to the broker
//	raft_first_index                 the first log index the node still holds (after compaction)
//	raft_is_leader                   1 on the leader
//	raft_has_leader                  1 while the node knows a leader
//	raft_leader_changes_total        leader changes this node observed (leaderWatch)
//	raft_follower_lag_entries{node}  on the leader: entries each other node is behind
//	raft_refused_connections_total{reason}  connections the raft port refused or cut
type raftCollector struct {
	w atomic.Pointer[leaderWatch]

	term, commit, applied, first, isLeader, hasLeader, changes, lag, refused *prometheus.Desc
}

func newRaftCollector() *raftCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &raftCollector{
		term:      d("imago_raft_term", "The cluster member's current raft term."),
		commit:    d("imago_raft_commit_index", "The highest raft log index this node knows is committed."),
		applied:   d("imago_raft_applied_index", "The highest raft log index applied to the broker on this node."),
		first:     d("imago_raft_first_index", "The first raft log index this node still holds (compaction removed the ones before it)."),
		isLeader:  d("imago_raft_is_leader", "1 when this node is the raft leader."),
		hasLeader: d("imago_raft_has_leader", "1 while this node knows a leader."),
		changes:   d("imago_raft_leader_changes_total", "Leader changes this node observed (a new leader id seen)."),
		lag:       d("imago_raft_follower_lag_entries", "On the leader: raft log entries each other member is behind.", "node"),
		refused: d("imago_raft_refused_connections_total",
			"Connections the raft port refused or cut, by reason: tls (failed handshake), not_member (certificate of another member), hello (bad or misaddressed hello), frame (too large), message (not a raft message, or misaddressed).", "reason"),
	}
}

func (c *raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.term, c.commit, c.applied, c.first, c.isLeader, c.hasLeader, c.changes, c.lag, c.refused} {
		ch <- d
	}
}

func (c *raftCollector) Collect(ch chan<- prometheus.Metric) {
	w := c.w.Load()
	if w == nil {
		return
	}
	w.look()
	st := w.c.Status()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	b := func(ok bool) float64 {
		if ok {
			return 1
		}
		return 0
	}
	leader := st.LeaderID != 0 && st.LeaderID == st.NodeID
	g(c.term, float64(st.Term))
	g(c.commit, float64(st.CommitIndex))
	g(c.applied, float64(st.AppliedIndex))
	g(c.first, float64(st.FirstIndex))
	g(c.isLeader, b(leader))
	g(c.hasLeader, b(st.LeaderID != 0))
	ch <- prometheus.MustNewConstMetric(c.changes, prometheus.CounterValue, float64(w.changes.Load()))
	for reason, n := range w.c.RefusedConnections() {
		ch <- prometheus.MustNewConstMetric(c.refused, prometheus.CounterValue, float64(n), reason)
	}
	if leader {
		for _, n := range st.Nodes {
			if n.ID != st.NodeID {
				g(c.lag, float64(n.LagEntries), strconv.FormatUint(n.ID, 10))
			}
		}
	}
}
