package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// recorder is an Applier that keeps what it applied and can be told to refuse an entry.
type recorder struct {
	mu      sync.Mutex
	applied []Entry
	refuse  func(index uint64, data []byte) error
}

func (r *recorder) Apply(index, term uint64, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse != nil {
		if err := r.refuse(index, data); err != nil {
			return err
		}
	}
	r.applied = append(r.applied, Entry{Index: index, Term: term, Data: append([]byte(nil), data...)})
	return nil
}

func (r *recorder) entries() []Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Entry(nil), r.applied...)
}

// chanNet connects in-process nodes; it marshals every message as the wire would.
type chanNet struct {
	mu    sync.Mutex
	nodes map[uint64]*Node
	cut   map[uint64]bool // isolated nodes: nothing in or out
}

type chanSender struct {
	net  *chanNet
	from uint64
}

func (s chanSender) Send(msgs []*pb.Message) {
	s.net.mu.Lock()
	defer s.net.mu.Unlock()
	for _, m := range msgs {
		to := s.net.nodes[m.GetTo()]
		if to == nil || s.net.cut[s.from] || s.net.cut[m.GetTo()] {
			continue
		}
		b, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		var c pb.Message
		if err := proto.Unmarshal(b, &c); err != nil {
			panic(err)
		}
		to.Step(&c)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type testCluster struct {
	net   *chanNet
	nodes map[uint64]*Node
	apps  map[uint64]*recorder
	dirs  map[uint64]string
	logs  map[uint64]*MemLog
	tick  time.Duration // raft's tick (default 5ms)
	onLog func(id uint64, l *MemLog)
	// wrap, when set, is the LogStore each node runs on over its MemLog.
	wrap func(id uint64, l *MemLog) LogStore
}

// startChanCluster starts three nodes on MemLogs; opts may set the tick and a hook that sees
// each log before its node is created.
func startChanCluster(t *testing.T, opts ...func(*testCluster)) *testCluster {
	t.Helper()
	c := &testCluster{
		net:   &chanNet{nodes: map[uint64]*Node{}, cut: map[uint64]bool{}},
		nodes: map[uint64]*Node{},
		apps:  map[uint64]*recorder{},
		dirs:  map[uint64]string{},
		logs:  map[uint64]*MemLog{},
		tick:  5 * time.Millisecond,
	}
	for _, o := range opts {
		o(c)
	}
	for id := uint64(1); id <= 3; id++ {
		c.dirs[id], c.logs[id] = t.TempDir(), NewMemLog()
		if c.onLog != nil {
			c.onLog(id, c.logs[id])
		}
		c.nodes[id] = c.newNode(t, id, 0)
	}
	c.net.mu.Lock()
	for id, n := range c.nodes {
		c.net.nodes[id] = n
	}
	c.net.mu.Unlock()
	for _, n := range c.nodes {
		n.Start(context.Background())
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			n.Stop()
		}
	})
	return c
}

func (c *testCluster) newNode(t *testing.T, id, applied uint64) *Node {
	t.Helper()
	var log LogStore = c.logs[id]
	if c.wrap != nil {
		log = c.wrap(id, c.logs[id])
	}
	st, err := OpenStorage(c.dirs[id], log)
	if err != nil {
		t.Fatal(err)
	}
	c.apps[id] = &recorder{}
	n, err := NewNode(Config{
		ID: id, Peers: []uint64{1, 2, 3}, Storage: st, Applier: c.apps[id], Applied: applied,
		Sender: chanSender{c.net, id}, TickInterval: c.tick, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes; the cluster runs on real tick
// timers, so there is no event to wait on.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (c *testCluster) leader(t *testing.T, except uint64) *Node {
	t.Helper()
	var l *Node
	waitFor(t, "a serving leader", func() bool {
		for id, n := range c.nodes {
			if id != except && n.Status().Serving && !c.net.isCut(id) {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

func (n *chanNet) isCut(id uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cut[id]
}

func TestNodeProposeReturnsWhenAppliedAndFollowersRefuse(t *testing.T) {
	c := startChanCluster(t)
	l := c.leader(t, 0)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := l.Propose(ctx, []byte(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatalf("propose %d: %v", i, err)
		}
		// Returned means applied here.
		got := c.apps[l.cfg.ID].entries()
		if last := got[len(got)-1]; string(last.Data) != fmt.Sprintf("m%d", i) {
			t.Fatalf("propose %d returned before its entry was applied (last applied %q)", i, last.Data)
		}
	}
	for id, n := range c.nodes {
		if id == l.cfg.ID {
			continue
		}
		if err := n.Propose(ctx, []byte("x")); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("propose on follower %d: %v, want ErrNotLeader", id, err)
		}
		refusedGroup(t, n, n.Status().Term, fmt.Sprintf("group on follower %d", id))
	}
	// A group for another term than the leader's is refused whole, as on a follower.
	refusedGroup(t, l, l.Status().Term+1, "group for a later term on the leader")
	want := c.apps[l.cfg.ID].entries()
	for id := range c.nodes {
		waitFor(t, fmt.Sprintf("node %d to apply %d entries", id, len(want)), func() bool {
			return len(c.apps[id].entries()) >= len(want)
		})
		got := c.apps[id].entries()
		for i := range want {
			if got[i].Index != want[i].Index || got[i].Term != want[i].Term || string(got[i].Data) != string(want[i].Data) {
				t.Fatalf("node %d applied %+v at position %d, leader %+v", id, got[i], i, want[i])
			}
		}
	}
}

func TestNodeOutcomeUnknownWhenLeaderIsolatedAfterProposing(t *testing.T) {
	c := startChanCluster(t)
	l := c.leader(t, 0)
	c.net.mu.Lock()
	c.net.cut[l.cfg.ID] = true
	c.net.mu.Unlock()
	// The isolated leader accepts the proposal, cannot commit it, and steps down (CheckQuorum).
	err := l.Propose(context.Background(), []byte("lost"))
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("propose on an isolated leader: %v, want ErrOutcomeUnknown", err)
	}
	// The other two elect a leader and go on.
	l2 := c.leader(t, l.cfg.ID)
	if err := l2.Propose(context.Background(), []byte("after")); err != nil {
		t.Fatalf("propose on the new leader: %v", err)
	}
	// Healed, the old leader's uncommitted entry is replaced and it applies what the group did.
	c.net.mu.Lock()
	c.net.cut[l.cfg.ID] = false
	c.net.mu.Unlock()
	waitFor(t, "old leader to apply the new leader's entry", func() bool {
		for _, e := range c.apps[l.cfg.ID].entries() {
			if string(e.Data) == "after" {
				return true
			}
		}
		return false
	})
	for _, e := range c.apps[l.cfg.ID].entries() {
		if string(e.Data) == "lost" {
			t.Fatalf("the isolated leader's uncommitted entry was applied: %+v", e)
		}
	}
}

func TestNodeApplyMismatchStopsNodeLoudly(t *testing.T) {
	c := startChanCluster(t)
	l := c.leader(t, 0)
	var victim uint64
	for id := range c.nodes {
		if id != l.cfg.ID {
			victim = id
			break
		}
	}
	mismatch := errors.New("offset 7 assigned by the leader, 8 here")
	c.apps[victim].mu.Lock()
	c.apps[victim].refuse = func(_ uint64, data []byte) error {
		if string(data) == "bad" {
			return mismatch
		}
		return nil
	}
	c.apps[victim].mu.Unlock()
	if err := l.Propose(context.Background(), []byte("bad")); err != nil {
		t.Fatalf("propose: %v", err)
	}
	select {
	case <-c.nodes[victim].Done():
	case <-time.After(10 * time.Second):
		t.Fatal("node with an apply mismatch kept running")
	}
	if err := c.nodes[victim].Status().Err; !errors.Is(err, mismatch) {
		t.Fatalf("stopped node's status error = %v, want the mismatch", err)
	}
	// The leader and the other follower still commit.
	if err := l.Propose(context.Background(), []byte("good")); err != nil {
		t.Fatalf("propose with one node stopped: %v", err)
	}
}

func TestNodeRestartStartsAfterWhatTheApplierHolds(t *testing.T) {
	c := startChanCluster(t)
	l := c.leader(t, 0)
	ctx := context.Background()
	for i := 0; i < 10; i++ {
		if err := l.Propose(ctx, []byte(fmt.Sprintf("m%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var f uint64
	for id := range c.nodes {
		if id != l.cfg.ID {
			f = id
			break
		}
	}
	want := l.Status().Applied
	waitFor(t, "follower to apply", func() bool { return c.nodes[f].Status().Applied >= want })
	c.nodes[f].Stop()
	applied := c.nodes[f].Status().Applied
	c.logs[f].Crash()
	// The state file's commit index is older than what the applier holds (it is rewritten only
	// on term or vote changes); the node must start anyway and apply only what follows.
	n := c.newNode(t, f, applied)
	c.net.mu.Lock()
	c.net.nodes[f], c.nodes[f] = n, n
	c.net.mu.Unlock()
	n.Start(context.Background())
	if err := l.Propose(ctx, []byte("after")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "restarted follower to apply the new entry", func() bool {
		got := c.apps[f].entries()
		return len(got) > 0 && string(got[len(got)-1].Data) == "after"
	})
	if got := c.apps[f].entries(); got[0].Index != applied+1 {
		t.Fatalf("restarted with Applied %d, first applied index %d", applied, got[0].Index)
	}
	waitFor(t, "the leader's match index of the restarted follower to pass its applied index", func() bool {
		m := l.Status().Match
		return len(m) == 3 && m[f] > applied
	})
}

// TestNodeStatusCarriesTheLeadersCommit: a follower whose log is far behind refuses the
// leader's append (it does not have the entry before it), and its own commit index stays at
// its log's end; the commit index the leader announced is in its status all the same, which
// is what readiness compares the applied index with.
func TestNodeStatusCarriesTheLeadersCommit(t *testing.T) {
	st, err := OpenStorage(t.TempDir(), NewMemLog())
	if err != nil {
		t.Fatal(err)
	}
	var sent []*pb.Message
	n, err := NewNode(Config{ID: 3, Peers: []uint64{1, 2, 3}, Storage: st, Applier: &recorder{},
		Sender: senderFunc(func(msgs []*pb.Message) { sent = append(sent, msgs...) }), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Process(); err != nil {
		t.Fatal(err)
	}
	n.Deliver(&pb.Message{Type: pb.MsgApp.Enum(), From: new(uint64(1)), To: new(uint64(3)), Term: new(uint64(2)),
		Index: new(uint64(500)), LogTerm: new(uint64(2)), Commit: new(uint64(800))})
	if err := n.Process(); err != nil {
		t.Fatal(err)
	}
	s := n.Status()
	if s.LeaderCommit != 800 || s.Commit >= 500 {
		t.Fatalf("after a refused append with commit 800: commit %d, leader commit %d", s.Commit, s.LeaderCommit)
	}
	rejected := false
	for _, m := range sent {
		rejected = rejected || (m.GetType() == pb.MsgAppResp && m.GetReject())
	}
	if !rejected {
		t.Fatalf("the follower did not refuse the append: sent %v", sent)
	}
}

type senderFunc func([]*pb.Message)

func (f senderFunc) Send(msgs []*pb.Message) { f(msgs) }

// refusedGroup proposes a group that n must refuse with ErrNotLeader, and checks that nothing
// was sent on its outcome channels: the caller answers its writers itself then, and a second
// send on a channel with room for one would block the loop.
func refusedGroup(t *testing.T, n *Node, term uint64, what string) {
	t.Helper()
	outs := []chan error{make(chan error, 1), make(chan error, 1)}
	err := n.ProposeGroup(term, [][]byte{[]byte("g1"), []byte("g2")}, []chan<- error{outs[0], outs[1]})
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("%s: %v, want ErrNotLeader", what, err)
	}
	for i, ch := range outs {
		if len(ch) != 0 {
			t.Fatalf("%s: refused, yet outcome %d was sent: %v", what, i, <-ch)
		}
	}
}
