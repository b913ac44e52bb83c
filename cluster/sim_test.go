package cluster

import (
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strings"
	"testing"
	"testing/cryptotest"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The deterministic cluster test: three Nodes on MemLog stores, driven step by step from one
// goroutine (no Start, no timers) over a simulated network that drops, duplicates, delays
// (hence reorders) and partitions messages (a node isolated, or one direction of a link cut), with crashes that discard what was not synced.
// Everything random comes from the seed: the network's, the client's and the crashes' choices
// from a PCG generator, and raft's election-timeout jitter (which the library draws from
// crypto/rand) from cryptotest.SetGlobalRandom. A failing seed therefore fails again the same
// way: rerun it with -run 'TestSimCluster/seed=N'.
//
// Invariants checked:
//   - Every node applies the same entry at each index (checked at every Apply against the
//     first application anywhere), contiguously from 1.
//   - A committed entry is never lost: after every crash, every entry applied anywhere is
//     still in the durable log of at least two nodes (raft's guarantee, which breaks if a node
//     acknowledges, or a leader counts itself, before its sync).
//   - An acknowledged proposal is the entry applied at its index.
//   - After the faults stop the group converges: every node's log holds the same committed
//     prefix and every node has applied all of it.

var simSeeds = flag.Int("cluster.seeds", 0, "number of seeds TestSimCluster runs (default 300, 40 with -short)")

const (
	simSteps      = 1500 // faulty steps per seed
	simSettle     = 3000 // fault-free steps allowed to converge
	simElection   = 10
	simTickChance = 0.5
)

var errSimCrash = errors.New("simulated power loss during fsync")

type simMsg struct {
	from, to uint64
	data     []byte
	at       int
}

type simNode struct {
	id       uint64
	state    *memState
	log      *MemLog
	node     *Node // nil while down
	up       int   // step at which a down node restarts
	restarts int
}

type simProp struct {
	p    *proposal
	done <-chan error // p.done's receiving end
	data string
}

type sim struct {
	t      *testing.T
	seed   uint64
	rng    *rand.Rand
	now    int
	nodes  []*simNode // index 0 unused
	net    []simMsg
	group  [4]int     // partition group per node: messages cross only within a group
	oneway [4][4]bool // oneway[a][b]: messages from a to b are lost, b to a still arrive
	// faults: off during settling.
	faults bool

	committed map[uint64]Entry
	maxIndex  uint64
	props     []simProp
	nextProp  int

	acked, unknown, notLeader, crashes, torn int
	trace                                    []string
}

func (s *sim) logf(format string, args ...any) {
	line := fmt.Sprintf("%5d ", s.now) + fmt.Sprintf(format, args...)
	s.trace = append(s.trace, line)
	if len(s.trace) > 60 {
		s.trace = s.trace[1:]
	}
}

func (s *sim) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("seed %d step %d: %s\nlast events:\n%s", s.seed, s.now, fmt.Sprintf(format, args...),
		strings.Join(s.trace, "\n"))
}

// memState is the state file in memory. WriteFileAtomic's contract (old or new contents,
// durable once it returns) is what it models: a write is whole and survives every crash. The
// real file is tested in storage_test.go; keeping it off the disk here keeps the seeds fast on
// a busy machine.
type memState struct{ data []byte }

func (m *memState) read() ([]byte, error) {
	if m.data == nil {
		return nil, os.ErrNotExist
	}
	return m.data, nil
}

func (m *memState) write(data []byte) error {
	m.data = append([]byte(nil), data...)
	return nil
}

// simSender puts a node's messages on the simulated network, marshalled as the wire would.
type simSender struct {
	s    *sim
	from uint64
}

func (ss simSender) Send(msgs []*pb.Message) {
	s := ss.s
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			s.fatalf("marshal: %v", err)
		}
		s.net = append(s.net, simMsg{from: ss.from, to: m.GetTo(), data: b, at: s.now + s.rng.IntN(3)})
	}
}

// simApplier checks every application against the first application of that index anywhere.
type simApplier struct {
	s       *sim
	id      uint64
	applied uint64
}

func (a *simApplier) Apply(index, term uint64, data []byte) error {
	s := a.s
	if index != a.applied+1 {
		s.fatalf("node %d applied %d after %d", a.id, index, a.applied)
	}
	a.applied = index
	if c, ok := s.committed[index]; ok {
		if c.Term != term || string(c.Data) != string(data) {
			s.fatalf("node %d applied index %d term %d %q; another node applied term %d %q",
				a.id, index, term, data, c.Term, c.Data)
		}
		return nil
	}
	s.committed[index] = Entry{Index: index, Term: term, Data: append([]byte(nil), data...)}
	s.maxIndex = max(s.maxIndex, index)
	return nil
}

func (s *sim) start(nd *simNode) {
	st, err := openStorage(fmt.Sprintf("sim-node-%d", nd.id), nd.state, nd.log)
	if err != nil {
		s.fatalf("node %d: open storage: %v", nd.id, err)
	}
	n, err := NewNode(Config{
		ID: nd.id, Peers: []uint64{1, 2, 3}, Storage: st, Applier: &simApplier{s: s, id: nd.id},
		Sender: simSender{s, nd.id}, ElectionTick: simElection, HeartbeatTick: 1, Logger: quietLogger(),
	})
	if err != nil {
		s.fatalf("node %d: %v", nd.id, err)
	}
	nd.node = n
	s.logf("node %d starts (log %d..%d)", nd.id, nd.log.FirstIndex(), nd.log.LastIndex())
}

// crash kills nd: what it had not synced is gone, and so is its state machine.
func (s *sim) crash(nd *simNode, why string) {
	nd.node.failPending(fmt.Errorf("%w: node crashed", ErrOutcomeUnknown))
	nd.node = nil
	nd.log.FailSync = nil
	nd.log.Crash()
	nd.up = s.now + 5 + s.rng.IntN(60)
	s.crashes++
	s.logf("node %d crashes (%s), durable log ends at %d", nd.id, why, nd.log.LastIndex())
	s.checkDurable()
}

// checkDurable asserts that every entry applied anywhere is in the durable log of a quorum.
func (s *sim) checkDurable() {
	s.t.Helper()
	var logs [][]Entry
	for _, nd := range s.nodes[1:] {
		logs = append(logs, nd.log.Durable())
	}
	for i := uint64(1); i <= s.maxIndex; i++ {
		c := s.committed[i]
		have := 0
		for _, l := range logs {
			if i <= uint64(len(l)) && l[i-1].Term == c.Term && sameApplied(l[i-1], c) {
				have++
			}
		}
		if have < 2 {
			s.fatalf("committed entry %d (term %d) is durable on %d node(s)", i, c.Term, have)
		}
	}
}

func (s *sim) live() []*simNode {
	var out []*simNode
	for _, nd := range s.nodes[1:] {
		if nd.node != nil {
			out = append(out, nd)
		}
	}
	return out
}

func (s *sim) faultStep() {
	r := s.rng.Float64()
	switch {
	case r < 0.004: // partition: one node alone
		alone := 1 + s.rng.IntN(3)
		for i := 1; i <= 3; i++ {
			s.group[i] = 0
		}
		s.group[alone] = 1
		s.logf("partition: node %d isolated", alone)
	case r < 0.006: // one-way partition
		a := 1 + s.rng.IntN(3)
		b := 1 + (a+s.rng.IntN(2))%3
		s.oneway[a][b] = true
		s.logf("one-way partition: %d cannot reach %d", a, b)
	case r < 0.012: // heal
		s.group = [4]int{}
		s.oneway = [4][4]bool{}
		s.logf("partitions healed")
	case r < 0.015: // kill a node between rounds
		if l := s.live(); len(l) > 0 {
			s.crash(l[s.rng.IntN(len(l))], "kill")
		}
	case r < 0.018: // power loss during the node's next fsync: its write is lost
		if l := s.live(); len(l) > 0 {
			nd := l[s.rng.IntN(len(l))]
			if nd.log.FailSync == nil {
				nd.log.FailSync = func() error { return errSimCrash }
				s.logf("node %d will lose power in its next fsync", nd.id)
			}
		}
	}
}

func (s *sim) deliver() {
	var keep []simMsg
	due := s.net
	s.net = nil
	for _, m := range due {
		if m.at > s.now {
			keep = append(keep, m)
			continue
		}
		nd := s.nodes[m.to]
		if nd.node == nil || s.group[m.from] != s.group[m.to] || s.oneway[m.from][m.to] {
			continue
		}
		if s.faults {
			if s.rng.Float64() < 0.05 {
				continue // dropped
			}
			if s.rng.Float64() < 0.03 { // duplicated, later
				keep = append(keep, simMsg{from: m.from, to: m.to, data: m.data, at: s.now + 1 + s.rng.IntN(5)})
			}
		}
		var msg pb.Message
		if err := proto.Unmarshal(m.data, &msg); err != nil {
			s.fatalf("unmarshal: %v", err)
		}
		nd.node.step(&msg)
	}
	// Messages sent while delivering (none: nodes send only while processing) and the kept ones.
	s.net = append(keep, s.net...)
}

func (s *sim) propose() {
	l := s.live()
	if len(l) == 0 {
		return
	}
	nd := l[s.rng.IntN(len(l))]
	data := fmt.Sprintf("s%d-p%d", s.seed, s.nextProp)
	s.nextProp++
	done := make(chan error, 1)
	p := &proposal{data: []byte(data), done: done}
	if err := nd.node.proposeBatch(p); err != nil {
		s.crash(nd, err.Error())
	}
	s.props = append(s.props, simProp{p: p, done: done, data: data})
}

func (s *sim) collect() {
	keep := s.props[:0]
	for _, sp := range s.props {
		select {
		case err := <-sp.done:
			switch {
			case err == nil:
				s.acked++
				c, ok := s.committed[sp.p.index]
				if !ok || string(c.Data) != sp.data || c.Term != sp.p.term {
					s.fatalf("proposal %q acknowledged at index %d term %d, but index %d holds %+v",
						sp.data, sp.p.index, sp.p.term, sp.p.index, c)
				}
			case errors.Is(err, ErrOutcomeUnknown):
				s.unknown++
			case errors.Is(err, ErrNotLeader), errors.Is(err, ErrDropped), errors.Is(err, ErrStopped):
				s.notLeader++
			default:
				s.fatalf("proposal %q: unexpected error %v", sp.data, err)
			}
		default:
			keep = append(keep, sp)
		}
	}
	s.props = keep
}

func (s *sim) step() {
	s.now++
	if s.faults {
		s.faultStep()
	}
	for _, nd := range s.nodes[1:] {
		if nd.node == nil && s.now >= nd.up {
			nd.restarts++
			s.start(nd)
		}
	}
	s.deliver()
	for _, nd := range s.live() {
		if s.rng.Float64() < simTickChance {
			nd.node.rn.Tick()
		}
	}
	if s.rng.Float64() < 0.3 {
		s.propose()
	}
	for _, nd := range s.live() {
		if err := nd.node.process(); err != nil {
			if !errors.Is(err, errSimCrash) {
				s.fatalf("node %d: %v", nd.id, err)
			}
			s.torn++
			s.crash(nd, "power loss in fsync")
		}
	}
	s.collect()
}

// runSim runs one seed and returns a digest of what happened, for the determinism check.
func runSim(t *testing.T, seed uint64) string {
	cryptotest.SetGlobalRandom(t, seed)
	s := &sim{
		t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)),
		committed: map[uint64]Entry{}, faults: true,
	}
	defer func() {
		if r := recover(); r != nil {
			s.fatalf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	s.nodes = []*simNode{nil}
	for id := uint64(1); id <= 3; id++ {
		nd := &simNode{id: id, state: &memState{}, log: NewMemLog()}
		s.nodes = append(s.nodes, nd)
		s.start(nd)
	}
	for s.now < simSteps {
		s.step()
	}

	// Settle: no faults, everyone up, the network whole. The group must converge.
	s.faults = false
	s.group = [4]int{}
	s.oneway = [4][4]bool{}
	for _, nd := range s.nodes[1:] {
		nd.log.FailSync = nil
		nd.up = s.now
	}
	s.logf("faults stop")
	// A proposal of the settled group must be acknowledged, and then every node must have
	// applied everything committed anywhere.
	var final *proposal
	var finalDone chan error
	finalOK, converged := false, false
	for end := s.now + simSettle; s.now < end && !converged; {
		s.step()
		if final != nil && !finalOK {
			select {
			case err := <-finalDone:
				if finalOK = err == nil; !finalOK {
					final = nil
				}
			default:
			}
		}
		if final == nil {
			for _, nd := range s.live() {
				if nd.node.Status().Serving {
					finalDone = make(chan error, 1)
					final = &proposal{data: []byte("final"), done: finalDone}
					if err := nd.node.proposeBatch(final); err != nil {
						s.fatalf("final proposal: %v", err)
					}
					break
				}
			}
		}
		converged = finalOK && s.allApplied(s.maxIndex)
	}
	if !converged {
		s.fatalf("group did not converge within %d fault-free steps (max committed %d)", simSettle, s.maxIndex)
	}
	s.checkDurable()
	ref := s.nodes[1].log.Durable()
	for _, nd := range s.nodes[1:] {
		l := nd.log.Durable()
		for i := uint64(1); i <= s.maxIndex; i++ {
			c := s.committed[i]
			if i > uint64(len(l)) || l[i-1].Term != c.Term || !sameApplied(l[i-1], c) {
				var have Entry
				if i <= uint64(len(l)) {
					have = l[i-1]
				}
				s.fatalf("node %d's log differs from the committed prefix at index %d: has %+v (log ends %d), committed %+v; applied %d",
					nd.id, i, have, len(l), c, nd.node.Status().Applied)
			}
			if i <= uint64(len(ref)) && (l[i-1].Term != ref[i-1].Term || string(l[i-1].Data) != string(ref[i-1].Data)) {
				s.fatalf("node %d's log differs from node 1's at committed index %d", nd.id, i)
			}
		}
	}
	h := fnv.New64a()
	for i := uint64(1); i <= s.maxIndex; i++ {
		fmt.Fprintf(h, "%d/%d/%s;", i, s.committed[i].Term, s.committed[i].Data)
	}
	return fmt.Sprintf("committed=%d acked=%d unknown=%d refused=%d crashes=%d torn=%d steps=%d hash=%x",
		s.maxIndex, s.acked, s.unknown, s.notLeader, s.crashes, s.torn, s.now, h.Sum64())
}

func (s *sim) allApplied(index uint64) bool {
	for _, nd := range s.nodes[1:] {
		if nd.node == nil || nd.node.Status().Applied < index {
			return false
		}
	}
	return true
}

func TestSimCluster(t *testing.T) {
	seeds := *simSeeds
	if seeds == 0 {
		seeds = 300
		if testing.Short() {
			seeds = 40
		}
	}
	var acked, committed, crashes int
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			sum := runSim(t, seed)
			var c, a, u, r, cr, tn, st int
			var h string
			fmt.Sscanf(sum, "committed=%d acked=%d unknown=%d refused=%d crashes=%d torn=%d steps=%d hash=%s",
				&c, &a, &u, &r, &cr, &tn, &st, &h)
			committed += c
			acked += a
			crashes += cr
			t.Log(sum)
		})
	}
	t.Logf("%d seeds: %d entries committed, %d proposals acknowledged, %d crashes", seeds, committed, acked, crashes)
}

func TestSimClusterIsDeterministic(t *testing.T) {
	var sums [2]string
	for i := range sums {
		t.Run(fmt.Sprintf("run=%d", i), func(t *testing.T) { sums[i] = runSim(t, 7) })
	}
	if sums[0] != sums[1] {
		t.Fatalf("seed 7 ran differently twice:\n%s\n%s", sums[0], sums[1])
	}
}

// sameApplied reports whether the log entry e is what the applier saw as c: membership changes
// (the bootstrap entries) reach the applier as their index with no data.
func sameApplied(e, c Entry) bool {
	if e.Kind != KindNormal {
		return len(c.Data) == 0
	}
	return string(e.Data) == string(c.Data)
}
