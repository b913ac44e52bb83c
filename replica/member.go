package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/cluster"
)

// Member is a running cluster member: the raft node over the broker's log, its transport, and
// the broker's proposer. Start starts it; Stop stops it (before the broker is closed).
type Member struct {
	cfg     Config
	self    Peer
	members *membership
	b       *broker.Broker
	log     *slog.Logger

	node *cluster.Node
	tr   *cluster.Transport

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	done     chan struct{}
	// staged is set when the member stopped to install a snapshot (snapshot.go).
	staged atomic.Bool
	// promoteRounds counts the promoter's rounds as the serving leader (tests wait on it).
	promoteRounds atomic.Uint64
}

// Start joins b (opened with broker.Options.Replicated) to the cluster: it opens the raft state
// in the broker's data directory, starts the transport on cfg.RaftAddr and the node, and
// makes the broker propose its writes through raft.
//
// A data directory that must not vote makes Start fail, and the operator replaces the node
// under a new id (docs/cluster.md): its raft state is gone while its log is not; or it has
// neither and cfg.Bootstrap is false (a wiped directory looks like a new one, and a new node
// that votes may vote twice in a term it already voted in before the wipe). The broker itself
// refuses to open a log that fails verification below its durable end.
//
// With cfg.Join a directory without raft state starts only under an id that is new to the
// group (checkJoin): not one of the configured peers (the voters the cluster started with),
// and, in the answer of the serving leader asked over the raft port, neither a voter, nor a
// removed member, nor a learner that has already acknowledged entries. Raft lets any node
// grant votes, learners included, so a wiped voter let in under its old id would vote with
// an empty log and no memory of its earlier votes; only the leader knows every voter (a member
// added after the start is in no configuration file), so without its answer the node does not
// start.
func Start(ctx context.Context, cfg Config, b *broker.Broker, logger *slog.Logger) (*Member, error) {
	dir := b.Dir()
	if logger == nil {
		logger = slog.Default()
	}
	if b.RaftLog() == nil {
		return nil, errors.New("replica: the broker was not opened with Replicated")
	}
	m := &Member{cfg: cfg, b: b, log: logger.With("node", cfg.NodeID), done: make(chan struct{})}
	var ids []uint64
	for _, p := range cfg.Peers {
		ids = append(ids, p.ID)
	}
	members, err := loadMembership(dir, cfg.Peers)
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	m.members = members
	addrs := make(map[uint64]string)
	for _, p := range members.list() {
		addrs[p.ID] = p.RaftAddr
	}
	self, ok := members.get(cfg.NodeID)
	if !ok && cfg.Join {
		self, ok = Peer{ID: cfg.NodeID, RaftAddr: cfg.RaftAddr, HTTPAddr: cfg.HTTPAddr}, true
	}
	if !ok {
		return nil, fmt.Errorf("replica: node %d is not among the peers (a new machine joins with --join-cluster after POST /v1/cluster/members)", cfg.NodeID)
	}
	m.self = self
	listen := cfg.RaftAddr
	if listen == "" {
		listen = self.RaftAddr
	}
	st, err := cluster.OpenStorage(dir, logStore{b.RaftLog()})
	if err != nil {
		return nil, fmt.Errorf("replica: %w; this node must not vote: replace it under a new node id (docs/cluster.md)", err)
	}
	if st.IsNew() && !cfg.Bootstrap && !cfg.Join {
		return nil, fmt.Errorf("replica: %s has no raft state: either this is the first start of a new cluster (start it with --bootstrap-cluster) or the directory was wiped, and then the node must not vote: replace it under a new node id (docs/cluster.md)", dir)
	}
	if st.IsNew() && cfg.Join {
		if err := checkJoin(ctx, cfg, dir, m.log); err != nil {
			return nil, err
		}
	}
	tr, err := cluster.NewTransport(cluster.TransportConfig{ID: cfg.NodeID, Listen: listen, Peers: addrs, Logger: logger, Files: b.OpenSnapshotFile, Join: m.joinInfo, TLS: cfg.TLS})
	if err != nil {
		return nil, fmt.Errorf("replica: %w", err)
	}
	node, err := cluster.NewNode(cluster.Config{
		ID:           cfg.NodeID,
		Peers:        ids,
		Storage:      st,
		Applier:      applier{b},
		Applied:      b.AppliedIndex(),
		Sender:       tr,
		TickInterval: cfg.TickInterval,
		ElectionTick: cfg.ElectionTick,
		Logger:       logger,
		Join:         cfg.Join,
		OnConfChange: m.onConfChange,
		Snapshots:    memberSnapshotter(m),
	})
	if err != nil {
		tr.Stop()
		return nil, fmt.Errorf("replica: %w", err)
	}
	m.node, m.tr = node, tr
	tr.Start(ctx, node)
	node.Start(ctx)
	b.SetProposer(proposer{node})
	pctx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	m.wg.Add(1)
	go m.promote(pctx)
	go func() {
		select {
		case <-node.Done():
			// Before m.done closes, so that whoever sees the member stopped sees the broker
			// failed.
			m.failBroker(node.Status().Err)
		case <-b.Failed():
			// The broker refuses writes until a restart. A leader must not keep the
			// leadership on heartbeats alone; a follower could not apply. Stop the node: the
			// others elect a leader, and the supervisor restarts this process.
			m.log.Error("the broker failed; stopping the raft node", "err", b.Err())
			node.Stop()
		}
		close(m.done)
	}()
	m.log.Info("cluster member started", "raft_addr", tr.Addr(), "peers", len(ids), "applied_index", b.AppliedIndex(), "last_index", b.RaftLog().LastIndex())
	return m, nil
}

// failBroker fails the broker when the node stopped on err: a node that stopped takes no part
// in the cluster, and the broker over it must not look healthy to a program that embeds the
// library (Broker.Err, Broker.Failed), whatever stopped it. A committed entry that failed to
// apply (cluster.ErrApply) fails it as such, whichever the entry: a normal one did in
// ApplyEntry already, a membership change (its members file or raft state could not be
// written) never reached it. Any other error (a round's entries or raft state not saved, a
// log read fault, a proposal not at its index, a snapshot not staged) fails it with the
// node's reason; a failed write or fsync of the log itself failed it first, and that first
// error stays. Two stops are no failure: Stop (err nil), and a snapshot staged for install
// (cluster.ErrSnapshotStaged), a planned stop: nothing of the round that carried the snapshot
// was persisted, the broker's state is sound, and the process restarts at once to install it
// (SnapshotStaged) instead of reporting a storage failure.
func (m *Member) failBroker(err error) {
	switch {
	case err == nil, errors.Is(err, cluster.ErrSnapshotStaged):
	case errors.Is(err, cluster.ErrApply):
		m.b.FailApply(err)
	default:
		m.b.FailStopped(err)
	}
}

// Status returns the member's current view of the cluster.
func (m *Member) Status() Status {
	ns := m.node.Status()
	s := Status{
		ClusterID:         m.clusterID(),
		NodeID:            m.cfg.NodeID,
		LeaderID:          ns.Leader,
		Role:              ns.Role,
		Term:              ns.Term,
		CommitIndex:       ns.Commit,
		AppliedIndex:      ns.Applied,
		LeaderCommitIndex: ns.LeaderCommit,
		FirstIndex:        m.b.RaftLog().FirstIndex(),
		Serving:           ns.Serving,
	}
	if ns.Err != nil {
		s.Error = ns.Err.Error()
	} else if err := m.b.Err(); err != nil {
		s.Error = err.Error()
	}
	for _, p := range m.members.list() {
		n := NodeStatus{ID: p.ID, HTTPAddr: p.HTTPAddr, RaftAddr: p.RaftAddr, Role: "follower"}
		if p.ID == ns.Leader {
			n.Role = "leader"
		} else if slices.Contains(ns.Learners, p.ID) {
			n.Role = "learner"
		}
		if p.ID == m.cfg.NodeID {
			n.Reachable = true
			n.Role = ns.Role
		} else if active, ok := ns.Active[p.ID]; ok {
			n.Reachable = active // the leader heard from it within the election timeout
		} else {
			n.Reachable = m.tr.Connected(p.ID)
		}
		if match, ok := ns.Match[p.ID]; ok {
			n.MatchIndex = match
			if ns.Commit > match {
				n.LagEntries = ns.Commit - match
			}
		}
		s.Nodes = append(s.Nodes, n)
	}
	return s
}

// clusterID names the group by its bootstrap voters (the same on every member).
func (m *Member) clusterID() string {
	id := "imago"
	ids := make([]uint64, 0, len(m.cfg.Peers))
	for _, p := range m.cfg.Peers {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	for _, i := range ids {
		id += "-" + strconv.FormatUint(i, 10)
	}
	return id
}

// Self is this node as configured.
func (m *Member) Self() Peer { return m.self }

// Leader returns the leader this node knows of (possibly itself); false when none is known.
func (m *Member) Leader() (Peer, bool) {
	id := m.node.Status().Leader
	if id == 0 {
		return Peer{}, false
	}
	return m.members.get(id)
}

// Serving reports whether this node is the leader and accepts writes.
func (m *Member) Serving() bool { return m.node.Status().Serving }

// Done is closed when the member has stopped (Stop, the node stopped on an error, or the
// broker failed and the member stopped the node: see Status().Error). A member that stopped
// on an error takes no part in the cluster, and its broker has failed by the time Done is
// closed (failBroker), unless it stopped to install a staged snapshot (SnapshotStaged): the
// process should exit so that a supervisor restarts it, or restart itself for the snapshot.
func (m *Member) Done() <-chan struct{} { return m.done }

// Stop stops the node and the transport. Writes waiting for their entries end with
// broker.ErrOutcomeUnknown.
func (m *Member) Stop() {
	m.stopOnce.Do(func() {
		m.cancel()
		m.wg.Wait()
		m.node.Stop()
		m.tr.Stop()
	})
}

// RaftAddr is the address the transport listens on.
func (m *Member) RaftAddr() string { return m.tr.Addr() }

// RefusedConnections counts the connections the raft port refused or cut, by reason
// (cluster.Transport.RefusedConnections).
func (m *Member) RefusedConnections() map[string]uint64 { return m.tr.RefusedConnections() }

// applier hands committed entries to the broker.
type applier struct{ b *broker.Broker }

func (a applier) Apply(index, term uint64, data []byte) error {
	return a.b.ApplyEntry(index, term, data)
}

// proposer is the broker's way into raft.
type proposer struct{ n *cluster.Node }

func (p proposer) Serving() (uint64, bool) {
	s := p.n.Status()
	return s.Term, s.Serving
}

// CompactionFloor is the lowest index a follower in touch with this leader has not yet
// acknowledged (broker compaction keeps it); no floor when this node does not lead.
func (p proposer) CompactionFloor() uint64 {
	s := p.n.Status()
	floor := uint64(math.MaxUint64)
	for id, match := range s.Match {
		if id != s.ID && s.Active[id] {
			floor = min(floor, match+1)
		}
	}
	return floor
}

func (p proposer) Propose(term uint64, entries [][]byte, outcomes []chan<- error) error {
	err := p.n.ProposeGroup(term, entries, outcomes)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cluster.ErrNotLeader):
		return broker.ErrNotLeader
	case errors.Is(err, cluster.ErrDropped):
		return fmt.Errorf("%w: %v", broker.ErrBackpressure, err)
	case errors.Is(err, cluster.ErrStopped):
		return fmt.Errorf("%w: %v", broker.ErrClosed, err)
	}
	return err
}

// logStore adapts the broker's raft log to cluster.LogStore.
type logStore struct{ l *broker.RaftLog }

func (s logStore) Append(ents []cluster.Entry) error {
	out := make([]broker.RaftEntry, len(ents))
	for i, e := range ents {
		out[i] = broker.RaftEntry{Index: e.Index, Term: e.Term, Kind: uint8(e.Kind), Data: e.Data}
	}
	return s.l.Append(out)
}

func (s logStore) Entries(lo, hi, maxSize uint64) ([]cluster.Entry, error) {
	ents, err := s.l.Entries(lo, hi, maxSize)
	if err != nil {
		return nil, logStoreErr(err)
	}
	out := make([]cluster.Entry, len(ents))
	for i, e := range ents {
		out[i] = cluster.Entry{Index: e.Index, Term: e.Term, Kind: cluster.EntryKind(e.Kind), Data: e.Data}
	}
	return out, nil
}

// Term returns the term of entry i. The retention goroutine compacts the log while the Ready
// loop runs, so an index raft has just found at or above the compaction point may be compacted
// when it is read here: that must reach raft as its own ErrCompacted (it sends a snapshot),
// because raft panics on any other error from Term.
func (s logStore) Term(i uint64) (uint64, error) {
	t, err := s.l.Term(i)
	if err != nil {
		return 0, logStoreErr(err)
	}
	return t, nil
}

// logStoreErr maps the broker's errors for indexes it cannot serve to the cluster package's,
// which the storage adapter hands to raft as raft's own.
func logStoreErr(err error) error {
	switch {
	case errors.Is(err, broker.ErrRaftCompacted):
		return cluster.ErrCompacted
	case errors.Is(err, broker.ErrRaftUnavailable):
		return cluster.ErrUnavailable
	}
	return err
}

func (s logStore) FirstIndex() uint64              { return s.l.FirstIndex() }
func (s logStore) LastIndex() uint64               { return s.l.LastIndex() }
func (s logStore) Sync() error                     { return s.l.Sync() }
func (s logStore) Compacted() (index, term uint64) { return s.l.Compacted() }

// ReadBarrier returns once this node, as the leader, has applied everything committed when it
// was called, confirmed by a quorum (cluster.Node.ReadBarrier); broker.ErrNotLeader otherwise.
func (m *Member) ReadBarrier(ctx context.Context) error {
	err := m.node.ReadBarrier(ctx)
	if errors.Is(err, cluster.ErrNotLeader) || errors.Is(err, cluster.ErrStopped) {
		return fmt.Errorf("%w: %v", broker.ErrNotLeader, err)
	}
	return err
}
