package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// Errors Propose returns; callers branch on them.
var (
	// ErrNotLeader: this node is not the leader (or is handing leadership over). Nothing was
	// proposed; the caller forwards to Status().Leader or answers no_leader.
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrDropped: raft refused the proposal (too many uncommitted bytes). Nothing was proposed.
	ErrDropped = errors.New("cluster: proposal dropped")
	// ErrOutcomeUnknown: the entry was proposed, then leadership was lost, the term changed, the
	// node stopped or the caller's context ended before it was applied. It may or may not
	// commit; the client retries with its idempotency key.
	ErrOutcomeUnknown = errors.New("cluster: outcome unknown")
	// ErrStopped: the node is not running.
	ErrStopped = errors.New("cluster: node stopped")
	// ErrSnapshotStaged: the node received a snapshot (its log was behind the leader's
	// compacted log), staged it through Config.Snapshots and stopped: the process restarts
	// and installs it before it opens its state.
	ErrSnapshotStaged = errors.New("cluster: snapshot staged; restart to install it")
	// ErrApply: the node stopped because a committed entry could not be applied: the Applier
	// refused a normal entry, or a membership change could not be recorded (Config.OnConfChange
	// or the stored membership failed). Status().Err wraps it and names the entry. What
	// embeds the node must fail its state machine with it, whichever the entry: the
	// state in memory may hold the entry in part (OnConfChange's members, the Applier's
	// indexes), and only a restart that applies the entry again from the log sets it right.
	ErrApply = errors.New("cluster: apply committed entry")
)

// Snapshotter makes and stages the state machine's snapshots. A node whose log was never
// compacted never needs one; without a Snapshotter a compacted log answers raft's request for a
// snapshot with ErrSnapshotTemporarilyUnavailable, and a node sent one stops.
type Snapshotter interface {
	// Make describes the applied state at some index at or above the log's compaction point:
	// the snapshot's data (small: it names what to copy, it does not carry it), index and
	// term. An error means none can be made now; raft asks again later.
	Make() (data []byte, index, term uint64, err error)
	// Stage copies what snap describes from the member that sent it and makes it durable, to
	// be installed when the node starts next. It blocks the Ready loop while it copies.
	Stage(ctx context.Context, snap *pb.Snapshot) error
}

// Applier is the state machine: it receives every committed normal entry, in index order, once
// per incarnation of the node (after a restart from the index after Config.Applied). Empty
// entries are the no-ops a new leader commits in its term; they are applied too so the applier
// sees every index. An error stops the node (Status().Err wraps ErrApply): an applier that
// finds the entry disagreeing with its state (an offset the leader assigned differently) must
// say so rather than continue.
type Applier interface {
	Apply(index, term uint64, data []byte) error
}

// Sender delivers raft messages to peers. Send is called from the Ready loop; it must not block
// on the network and must serialize the messages before it returns (they share memory with the
// log). Delivery is best effort: raft retries what is lost.
type Sender interface {
	Send(msgs []*pb.Message)
}

// Config configures a Node.
type Config struct {
	// ID is this node's id, never reused for another machine.
	ID uint64
	// Peers are the voters at bootstrap (this node included); used only for a new directory.
	Peers []uint64
	// Storage holds the log and the raft state.
	Storage *Storage
	// Applier receives committed entries.
	Applier Applier
	// Applied is the last index the Applier already holds (0 for a state machine rebuilt from
	// nothing).
	Applied uint64
	// Sender delivers messages to peers.
	Sender Sender
	// TickInterval is the duration of one raft tick (default 100ms); elections start after
	// ElectionTick ticks without a leader (default 10), heartbeats every HeartbeatTick (1).
	TickInterval  time.Duration
	ElectionTick  int
	HeartbeatTick int
	// Logger receives the node's and raft's log lines (default slog.Default()).
	Logger *slog.Logger
	// Join starts a node with no voters of its own: a new member that an existing group added
	// (as a learner) learns the membership from the leader's log. Peers is ignored.
	Join bool
	// OnConfChange, when set, is called on the loop when a membership change is applied, with
	// the change and the membership it produced, before the stored membership records the
	// change (applyConfChange): what it persists is durable by the time the change is
	// skipped at a restart. It is called again for a change whose recording a crash cut short,
	// so it must be idempotent; an error stops the node with ErrApply, as a failure to record
	// the stored membership does (the restart applies the change again). The transport learns
	// new peers' addresses through it.
	OnConfChange func(index uint64, cc *pb.ConfChangeV2, cs *pb.ConfState) error
	// Snapshots makes and stages snapshots (nil: none; see Snapshotter).
	Snapshots Snapshotter
}

// Status is a node's view of the group, for GET /v1/cluster.
type Status struct {
	ID      uint64
	Leader  uint64 // 0 when no leader is known
	Role    string // "leader", "follower", "candidate", "pre-candidate"
	Term    uint64
	Commit  uint64
	Applied uint64
	// LeaderCommit is the highest commit index this node knows the cluster reached: its own on
	// the leader; on a follower, the highest a leader sent it, which may be past Commit (a
	// follower's commit index never passes its own log).
	LeaderCommit uint64
	// Serving: leader that has applied an entry of its own term, so its applied state includes
	// everything any earlier leader committed. Writes that assign offsets wait for it.
	Serving bool
	// Match is, on the leader, the highest index known to be on each member's disk (the
	// leader's own entry counts only after its fsync); nil on other nodes.
	Match map[uint64]uint64
	// Voters and Learners are the membership as this node has applied it.
	Voters   []uint64
	Learners []uint64
	// Active is, on the leader, whether each member was heard from within the last election
	// timeout (raft's RecentActive, which CheckQuorum keeps fresh); nil on other nodes.
	Active map[uint64]bool
	// Err is why the node stopped, if it stopped on an error. Every such stop but
	// ErrSnapshotStaged is final for this incarnation: the node follows the log no more, so
	// what embeds it must fail its state machine too, whether the error wraps ErrApply or not
	// (a program asks the state machine whether it is healthy, not the node).
	Err error
}

// group is a ProposeGroup call: entries proposed in one raft step, all or none.
type group struct {
	term  uint64
	props []*proposal
	res   chan error // buffered 1: nil when raft took the entries
}

type proposal struct {
	data  []byte
	conf  *pb.ConfChangeV2 // a membership change instead of data
	done  chan<- error     // receives the outcome, once; never blocks (buffered)
	index uint64
	term  uint64
	// seen: the entry has been checked against the Ready that carried it.
	seen bool
}

// Node runs one member of the raft group: a raft.RawNode and the Ready loop, in one goroutine
// that Start starts and Stop ends. Every use of the RawNode happens on that goroutine.
type Node struct {
	cfg Config
	log *slog.Logger
	rn  *raft.RawNode

	propc     chan *proposal
	groupc    chan *group
	transferc chan transfer
	readc     chan chan error
	recvc     chan *pb.Message
	unreach   chan uint64
	snapRep   chan snapReport
	ctx       context.Context // the Ready loop's, for Snapshots.Stage

	// Loop state.
	applied   uint64
	lastIndex uint64 // raft's last index; valid while no Ready is pending
	soft      raft.SoftState
	hsTerm    uint64
	hsVote    uint64
	pending   map[uint64]*proposal
	servingAt uint64 // term of the last applied entry
	// leaderCommit is the highest commit index a leader has told this node in an append or a
	// snapshot, even one this node refused: how far it must get to be caught up. Raft's own
	// commit index on a follower never passes the follower's log, so it cannot show a
	// follower that is far behind.
	leaderCommit uint64

	// Linearizable reads (ReadBarrier): one raft ReadIndex round per batch of waiting readers,
	// keyed by its request context; once raft confirms the index, the readers wait in
	// readWait until it is applied.
	readSeq  uint64
	reads    map[string][]chan error
	readWait []indexWaiter

	mu     sync.Mutex
	status Status

	cancel context.CancelFunc
	done   chan struct{}
}

// maxCommittedSize bounds the data of the committed entries applied in one go (a Ready's, or
// what saveOverlapped applies at once).
const maxCommittedSize = 8 << 20

// NewNode creates a node from its storage; it does not run until Start. A new directory is
// bootstrapped with cfg.Peers.
func NewNode(cfg Config) (*Node, error) {
	if cfg.ID == 0 || cfg.Storage == nil || cfg.Applier == nil || cfg.Sender == nil {
		return nil, errors.New("cluster: node needs an id, storage, applier and sender")
	}
	if cfg.TickInterval == 0 {
		cfg.TickInterval = 100 * time.Millisecond
	}
	if cfg.ElectionTick == 0 {
		cfg.ElectionTick = 10
	}
	if cfg.HeartbeatTick == 0 {
		cfg.HeartbeatTick = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	lg := cfg.Logger.With("node", cfg.ID)
	cfg.Storage.snapshots = cfg.Snapshots
	// A new directory starts the group: the voters go into the state file at once (so a crash
	// in the first fsync leaves a directory that is known, not one that looks wiped), and the
	// log begins with one membership change per voter (raft's own bootstrap, identical on every
	// member), so a node that joins later learns the voters by applying the log like everything
	// else. A directory whose state has the voters but whose log is still empty, and which never
	// voted, bootstraps its log again (the crash came before the first entries were synced). A
	// joining node starts empty.
	if !cfg.Join {
		// New: records the voters. Existing with no membership change applied yet: checks
		// they are the configured ones.
		if cfg.Storage.ConfIndex() == 0 {
			if err := cfg.Storage.Bootstrap(cfg.Peers); err != nil {
				return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
			}
		}
	}
	bootLog := !cfg.Join && cfg.Storage.log.LastIndex() == 0 && cfg.Storage.HardState().GetTerm() == 0 && cfg.Storage.ConfIndex() == 0
	if err := cfg.Storage.raiseCommit(cfg.Applied); err != nil {
		return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
	}
	rn, err := raft.NewRawNode(&raft.Config{
		ID:                        cfg.ID,
		ElectionTick:              cfg.ElectionTick,
		HeartbeatTick:             cfg.HeartbeatTick,
		Storage:                   cfg.Storage,
		Applied:                   cfg.Applied,
		MaxSizePerMsg:             1 << 20,
		MaxCommittedSizePerReady:  maxCommittedSize,
		MaxUncommittedEntriesSize: 64 << 20,
		MaxInflightMsgs:           256,
		CheckQuorum:               true,
		PreVote:                   true,
		ReadOnlyOption:            raft.ReadOnlySafe,
		DisableProposalForwarding: true,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{lg},
	})
	if err != nil {
		return nil, fmt.Errorf("node %d: %w", cfg.ID, err)
	}
	if bootLog {
		peers := make([]raft.Peer, len(cfg.Peers))
		for i, id := range cfg.Peers {
			peers[i] = raft.Peer{ID: id}
		}
		if err := rn.Bootstrap(peers); err != nil {
			return nil, fmt.Errorf("node %d: bootstrap: %w", cfg.ID, err)
		}
	}
	hs := cfg.Storage.HardState()
	n := &Node{
		cfg:       cfg,
		log:       lg,
		rn:        rn,
		propc:     make(chan *proposal, 256),
		groupc:    make(chan *group, 16),
		transferc: make(chan transfer, 1),
		readc:     make(chan chan error, 1024),
		reads:     make(map[string][]chan error),
		recvc:     make(chan *pb.Message, 1024),
		unreach:   make(chan uint64, 64),
		snapRep:   make(chan snapReport, 64),
		applied:   cfg.Applied,
		lastIndex: cfg.Storage.log.LastIndex(),
		hsTerm:    hs.GetTerm(),
		hsVote:    hs.GetVote(),
		pending:   make(map[uint64]*proposal),
		done:      make(chan struct{}),
	}
	n.soft = rn.BasicStatus().SoftState
	n.publish(nil)
	return n, nil
}

// Start runs the Ready loop until ctx ends or Stop is called. Call it once.
func (n *Node) Start(ctx context.Context) {
	ctx, n.cancel = context.WithCancel(ctx)
	n.ctx = ctx
	go n.run(ctx)
}

// Stop ends the loop and waits for it. Proposals still waiting fail with ErrOutcomeUnknown.
func (n *Node) Stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	<-n.done
}

// Done is closed when the loop has ended (Stop, or an error; see Status().Err).
func (n *Node) Done() <-chan struct{} { return n.done }

// Status returns the node's current view.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status
}

// Step hands a message from a peer to the loop. It drops the message when the loop is behind
// (raft retries), so the transport never blocks on a slow node.
func (n *Node) Step(m *pb.Message) {
	if raft.IsLocalMsg(m.GetType()) {
		return // never accepted from the network
	}
	select {
	case n.recvc <- m:
	default:
	}
}

// ReportUnreachable tells raft that a message to peer id was lost, so a leader probes that
// follower instead of streaming to it. It never blocks.
// ConfIndex is the index of the last membership change applied (Ready loop, or a Snapshotter
// called from it).
func (n *Node) ConfIndex() uint64 { return n.cfg.Storage.ConfIndex() }

// snapReport is the transport's word on a snapshot it sent (ReportSnapshot).
type snapReport struct {
	id     uint64
	failed bool
}

// ReportSnapshot tells raft whether the snapshot message to id went out (the transport calls
// it): the leader then probes id from the snapshot's index, or sends the snapshot again.
func (n *Node) ReportSnapshot(id uint64, failed bool) {
	select {
	case n.snapRep <- snapReport{id, failed}:
	default:
	}
}

func (n *Node) ReportUnreachable(id uint64) {
	select {
	case n.unreach <- id:
	default:
	}
}

// Propose replicates data as one entry and returns when it has been applied on this node (nil),
// or ErrNotLeader / ErrDropped when nothing was proposed, or ErrOutcomeUnknown (wrapping the
// cause) when the entry was proposed but its fate is not known.
func (n *Node) Propose(ctx context.Context, data []byte) error {
	done := make(chan error, 1)
	return n.submit(ctx, &proposal{data: data, done: done}, done)
}

// submit hands p to the loop and waits for its outcome on done (p.done's receiving end).
func (n *Node) submit(ctx context.Context, p *proposal, done <-chan error) error {
	select {
	case n.propc <- p:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.done:
		return ErrStopped
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
	case <-n.done:
		select {
		case err := <-done:
			return err
		default:
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, ErrStopped)
		}
	}
}

// ProposeGroup appends datas to raft's log as consecutive entries in one step (raft takes all
// or none), if this node is the leader of term and has applied an entry of it (Status.Serving).
// It returns when raft took or refused them: ErrNotLeader (not the serving leader of term, or
// handing leadership over), ErrDropped (raft refused: too many uncommitted bytes) or
// ErrStopped, and then nothing was proposed and nothing is ever sent on dones. Otherwise each
// dones[i] receives entry i's outcome once, like Propose: nil once applied on this node, or an
// error wrapping ErrOutcomeUnknown. Each must have room for it (buffered): the loop never
// waits on a send. The caller owns the channels, so its writer can wait on one channel for
// both a refusal and the outcome (the broker's produce path wakes its writer once).
//
// The caller may assign state to the entries (offsets) before proposing because a refusal is
// whole and a serving leader's log grows only by its own proposals.
func (n *Node) ProposeGroup(term uint64, datas [][]byte, dones []chan<- error) error {
	if len(dones) != len(datas) {
		return fmt.Errorf("propose group: %d entries and %d outcome channels", len(datas), len(dones))
	}
	g := &group{term: term, props: make([]*proposal, len(datas)), res: make(chan error, 1)}
	for i, d := range datas {
		g.props[i] = &proposal{data: d, done: dones[i]}
	}
	select {
	case n.groupc <- g:
	case <-n.done:
		return ErrStopped
	}
	select {
	case err := <-g.res:
		return err
	case <-n.done:
		select {
		case err := <-g.res:
			return err
		default:
			return ErrStopped
		}
	}
}

// proposeGroup runs ProposeGroup's step on the loop.
func (n *Node) proposeGroup(g *group) error {
	if err := n.process(); err != nil { // raft's last index must be known: no Ready pending
		g.res <- fmt.Errorf("%w: %w", ErrStopped, err)
		return err
	}
	n.stepGroup(g)
	return nil
}

// stepGroup proposes g's entries in one raft step. n.lastIndex must be raft's last index: no
// Ready pending, or the leader's own round in flight (saveOverlapped).
func (n *Node) stepGroup(g *group) {
	st := n.rn.BasicStatus()
	if st.RaftState != raft.StateLeader || st.LeadTransferee != raft.None || st.HardState.GetTerm() != g.term || n.servingAt != g.term {
		g.res <- ErrNotLeader
		return
	}
	m := &pb.Message{Type: pb.MsgProp.Enum(), From: new(n.cfg.ID), Entries: make([]*pb.Entry, len(g.props))}
	for i, p := range g.props {
		m.Entries[i] = &pb.Entry{Data: p.data}
	}
	if err := n.rn.Step(m); err != nil {
		g.res <- fmt.Errorf("%w: %w", ErrDropped, err)
		return
	}
	for _, p := range g.props {
		n.lastIndex++
		p.index, p.term = n.lastIndex, g.term
		n.pending[p.index] = p
	}
	g.res <- nil
}

func (n *Node) run(ctx context.Context) {
	defer close(n.done)
	defer n.stopOnStorageFault()
	ticker := time.NewTicker(n.cfg.TickInterval)
	defer ticker.Stop()
	var err error
	for err == nil {
		select {
		case <-ctx.Done():
			n.failPending(fmt.Errorf("%w: %w", ErrOutcomeUnknown, ErrStopped))
			return
		case <-ticker.C:
			n.rn.Tick()
		case m := <-n.recvc:
			n.step(m)
		case id := <-n.unreach:
			n.rn.ReportUnreachable(id)
		case r := <-n.snapRep:
			status := raft.SnapshotFinish
			if r.failed {
				status = raft.SnapshotFailure
			}
			n.rn.ReportSnapshot(r.id, status)
		case p := <-n.propc:
			n.drainRecv()
			err = n.proposeBatch(p)
		case g := <-n.groupc:
			n.drainRecv()
			err = n.proposeGroup(g)
		case r := <-n.readc:
			n.drainRecv()
			n.startReads(r)
		case t := <-n.transferc:
			st := n.rn.BasicStatus()
			if st.RaftState != raft.StateLeader {
				t.res <- ErrNotLeader
			} else {
				n.rn.TransferLeader(t.to)
				t.res <- nil
			}
		}
		if err == nil {
			n.drainRecv()
			err = n.process()
		}
	}
	n.log.Error("raft node stopped", "err", err)
	n.failPending(fmt.Errorf("%w: %w", ErrOutcomeUnknown, err))
	n.publish(err)
}

// drainRecv steps every message already received, so that one Ready (one write, one fsync)
// covers them all: on the leader the acknowledgements that commit earlier entries are then
// applied in the same round as the next entries are written, instead of one fsync later.
func (n *Node) drainRecv() {
	for range cap(n.recvc) {
		select {
		case m := <-n.recvc:
			n.step(m)
		default:
			return
		}
	}
}

func (n *Node) step(m *pb.Message) {
	switch m.GetType() {
	case pb.MsgApp:
		n.leaderCommit = max(n.leaderCommit, m.GetCommit())
	case pb.MsgSnap:
		n.leaderCommit = max(n.leaderCommit, m.GetSnapshot().GetMetadata().GetIndex())
	}
	if err := n.rn.Step(m); err != nil && !errors.Is(err, raft.ErrStepPeerNotFound) {
		n.log.Debug("raft step", "type", m.GetType().String(), "from", m.GetFrom(), "err", err)
	}
}

// proposeBatch proposes p and whatever else is queued, so that one round carries them all.
func (n *Node) proposeBatch(p *proposal) error {
	if err := n.process(); err != nil { // raft's last index must be known: no Ready pending
		p.done <- fmt.Errorf("%w: %w", ErrStopped, err)
		return err
	}
	n.propose(p)
	for i := 0; i < cap(n.propc); i++ {
		select {
		case p := <-n.propc:
			n.propose(p)
		default:
			return nil
		}
	}
	return nil
}

// propose appends p to raft's log. Raft assigns it index lastIndex+1 and the current term: the
// loop proposes only when no Ready is pending, so nothing else has grown the log since the last
// Ready; process checks the assignment against the Ready that carries the entry.
func (n *Node) propose(p *proposal) {
	st := n.rn.BasicStatus()
	if st.RaftState != raft.StateLeader || st.LeadTransferee != raft.None {
		p.done <- ErrNotLeader
		return
	}
	var err error
	if p.conf != nil {
		err = n.rn.ProposeConfChange(p.conf)
	} else {
		err = n.rn.Propose(p.data)
	}
	if err != nil {
		p.done <- fmt.Errorf("%w: %w", ErrDropped, err)
		return
	}
	n.lastIndex++
	p.index, p.term = n.lastIndex, st.HardState.GetTerm()
	n.pending[p.index] = p
}

// process handles every pending Ready.
func (n *Node) process() error {
	for n.rn.HasReady() {
		if err := n.handleReady(); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) handleReady() error {
	rd := n.rn.Ready()
	if rd.SoftState != nil {
		n.soft = *rd.SoftState
	}
	// A leader whose term and vote this round does not change may send before its own write:
	// its appends and heartbeats vouch for nothing on its disk, and it counts its own entries
	// only at Advance, after the sync below.
	changesVote := rd.HardState != nil && (rd.HardState.GetTerm() != n.hsTerm || rd.HardState.GetVote() != n.hsVote)
	early := n.soft.RaftState == raft.StateLeader && !changesVote
	if early {
		n.cfg.Sender.Send(rd.Messages)
	}
	if !raft.IsEmptySnap(rd.Snapshot) {
		// Nothing of this Ready is persisted or sent: the answer to the snapshot leaves only
		// after the restart installed it (the leader probes again then).
		idx := rd.Snapshot.GetMetadata().GetIndex()
		if n.cfg.Snapshots == nil {
			return fmt.Errorf("received a snapshot at index %d: this node cannot install snapshots", idx)
		}
		n.log.Warn("this node's log is behind the leader's compacted log: copying a snapshot", "index", idx, "term", rd.Snapshot.GetMetadata().GetTerm(), "last_index", n.cfg.Storage.log.LastIndex())
		ctx := n.ctx
		if ctx == nil {
			ctx = context.Background() // driven manually (manual.go): no loop context
		}
		if err := n.cfg.Snapshots.Stage(ctx, rd.Snapshot); err != nil {
			return fmt.Errorf("stage the snapshot at index %d: %w", idx, err)
		}
		n.log.Info("snapshot staged: stopping to install it", "index", idx)
		return fmt.Errorf("%w (index %d)", ErrSnapshotStaged, idx)
	}
	for _, e := range rd.Entries {
		if p := n.pending[e.GetIndex()]; p != nil && !p.seen {
			if e.GetTerm() > p.term {
				// A newer leader's entry took the index before a round carried ours (a leader
				// paused between proposing and persisting, then replaced): ours was never
				// written nor sent. Its caller is told the outcome is unknown, as for any
				// proposal that loses its leadership.
				p.done <- fmt.Errorf("%w: index %d went to term %d before the proposal of term %d was written", ErrOutcomeUnknown, p.index, e.GetTerm(), p.term)
				delete(n.pending, p.index)
				continue
			}
			if e.GetTerm() != p.term || (p.conf == nil && !bytes.Equal(e.GetData(), p.data)) || (p.conf != nil) != (e.GetType() != pb.EntryNormal) {
				return fmt.Errorf("proposal expected at index %d term %d, raft appended term %d (%d bytes)",
					p.index, p.term, e.GetTerm(), len(e.GetData()))
			}
			p.seen = true
		}
	}
	// Committed entries already durable here (appended and synced by an earlier round, and
	// not being overwritten by this one) are applied before this round's write and fsync, so
	// their writers are answered one fsync sooner. The rest wait for the sync below.
	bound := n.cfg.Storage.log.LastIndex()
	if len(rd.Entries) > 0 && rd.Entries[0].GetIndex()-1 < bound {
		bound = rd.Entries[0].GetIndex() - 1
	}
	applied := 0
	for ; applied < len(rd.CommittedEntries) && rd.CommittedEntries[applied].GetIndex() <= bound; applied++ {
		if err := n.applyOnce(rd.CommittedEntries[applied]); err != nil {
			return err
		}
	}
	var err error
	overlapped := early && len(rd.Entries) > 0 && n.ctx != nil
	if overlapped {
		err = n.saveOverlapped(&rd, bound)
	} else {
		err = n.cfg.Storage.Save(rd.HardState, rd.Entries)
	}
	if err != nil {
		return fmt.Errorf("persist: %w", err)
	}
	if rd.HardState != nil {
		n.hsTerm, n.hsVote = rd.HardState.GetTerm(), rd.HardState.GetVote()
	}
	if !early {
		n.cfg.Sender.Send(rd.Messages)
	}
	for _, e := range rd.CommittedEntries[applied:] {
		if err := n.applyOnce(e); err != nil {
			return err
		}
	}
	n.finishReads(rd.ReadStates)
	n.rn.Advance(rd)
	if !overlapped { // saveOverlapped counted the entries proposed while it synced
		n.lastIndex = n.cfg.Storage.log.LastIndex()
	}
	// Proposals of an earlier term or of a leader that stepped down: fate unknown.
	st := n.rn.BasicStatus()
	if len(n.pending) > 0 && (st.RaftState != raft.StateLeader || rd.HardState != nil) {
		for i, p := range n.pending {
			if st.RaftState != raft.StateLeader || p.term != st.HardState.GetTerm() {
				p.done <- fmt.Errorf("%w: leadership lost after proposing at index %d term %d", ErrOutcomeUnknown, p.index, p.term)
				delete(n.pending, i)
			}
		}
	}
	n.publish(nil)
	return nil
}

// applyOnce applies e unless saveOverlapped already did.
func (n *Node) applyOnce(e *pb.Entry) error {
	if e.GetIndex() <= n.applied && e.GetType() == pb.EntryNormal {
		return nil
	}
	return n.apply(e)
}

func (n *Node) apply(e *pb.Entry) error {
	if e.GetIndex() != n.applied+1 {
		return fmt.Errorf("apply: committed entry %d does not follow applied %d", e.GetIndex(), n.applied)
	}
	data := e.GetData()
	if e.GetType() != pb.EntryNormal {
		if err := n.applyConfChange(e); err != nil {
			return fmt.Errorf("%w %d (term %d): %w", ErrApply, e.GetIndex(), e.GetTerm(), err)
		}
		data = nil // the state machine sees the index, not the change
	}
	if err := n.cfg.Applier.Apply(e.GetIndex(), e.GetTerm(), data); err != nil {
		return fmt.Errorf("%w %d (term %d): %w", ErrApply, e.GetIndex(), e.GetTerm(), err)
	}
	n.applied = e.GetIndex()
	n.servingAt = e.GetTerm()
	if p := n.pending[e.GetIndex()]; p != nil {
		delete(n.pending, e.GetIndex())
		if p.term == e.GetTerm() {
			p.done <- nil
		} else {
			p.done <- fmt.Errorf("%w: index %d committed with term %d, proposed in %d", ErrOutcomeUnknown, p.index, e.GetTerm(), p.term)
		}
	}
	return nil
}

func (n *Node) failPending(err error) {
	for i, p := range n.pending {
		p.done <- err
		delete(n.pending, i)
	}
	for {
		select {
		case p := <-n.propc:
			p.done <- ErrStopped
		case g := <-n.groupc:
			g.res <- ErrStopped
		default:
			return
		}
	}
}

func (n *Node) publish(err error) {
	st := n.rn.BasicStatus()
	s := Status{
		ID:      n.cfg.ID,
		Leader:  st.Lead,
		Role:    roleName(st.RaftState),
		Term:    st.HardState.GetTerm(),
		Commit:  st.HardState.GetCommit(),
		Applied: n.applied,
		// Never below Commit: commit indexes only grow, whoever announced them.
		LeaderCommit: max(n.leaderCommit, st.HardState.GetCommit()),
		Serving:      err == nil && st.RaftState == raft.StateLeader && n.servingAt == st.HardState.GetTerm(),
		Err:          err,
	}
	cs := n.cfg.Storage.ConfState()
	s.Voters, s.Learners = slices.Clone(cs.GetVoters()), slices.Clone(cs.GetLearners())
	if st.RaftState == raft.StateLeader {
		s.Match = make(map[uint64]uint64)
		s.Active = make(map[uint64]bool)
		n.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
			s.Match[id] = pr.Match
			s.Active[id] = pr.RecentActive
		})
	}
	n.mu.Lock()
	n.status = s
	n.mu.Unlock()
}

func roleName(s raft.StateType) string {
	switch s {
	case raft.StateLeader:
		return "leader"
	case raft.StateCandidate:
		return "candidate"
	case raft.StatePreCandidate:
		return "pre-candidate"
	}
	return "follower"
}
