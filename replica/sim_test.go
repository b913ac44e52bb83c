package replica

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/cluster"
	"github.com/imagomq/imago/internal/powerloss"
)

// The deterministic simulation of a cluster on the real storage: three brokers opened with
// Replicated in temporary directories, each with a cluster.Node over its RaftLog (through this
// package's logStore, applier and proposer), driven step by step from the test goroutine with
// the Node's manual API (cluster/manual.go): no ticker, no transport. One seed decides
// everything: the simulated network (drop, duplicate, delay and hence reorder, isolate a node,
// cut one direction of a link, heal), the client's load (produces with idempotency keys
// through the serving leader, sometimes through another node, retries of unanswered keys,
// also while the first attempt is still in flight, reads of random partitions from random
// nodes), and the crashes (sim_disk_test.go):
//
//   - power loss between rounds: every file under the node's directory is cut back to what
//     its last sync made durable and names no directory sync covered disappear
//     (internal/powerloss); a commit-log segment may also keep a torn tail of unsynced bytes,
//     or old pages where it was rewritten since its sync; the broker and the node then reopen
//     from disk;
//   - power loss in the node's next sync (of its log, or of any of its files): the sync fails,
//     the node stops on the storage error, and the same cut follows; or the sync fails with
//     EIO and the node restarts without a power loss;
//   - kill -9 between rounds, or inside a commit-log fsync (entries written, not synced; the
//     page cache keeps them);
//   - clean restart: the node stops, the broker closes (writing its checkpoint), both reopen.
//
// Every sync goes through one fsutil hook that records what it made durable (the recorder is
// the disk's memory) without calling fsync: the simulation needs the model, not the disk.
// Raft's election jitter comes from crypto/rand, made seeded by cryptotest.SetGlobalRandom; the
// broker's clock is the simulation's step counter. The brokers' own goroutines (the proposer,
// the produce calls) are waited for at fixed points: a produce is launched and the simulation
// waits until it has either reached raft (TakeProposal) or answered without proposing, and an
// attempt's answer is collected only once the node resolved its entry. A failing seed therefore
// fails the same way again: rerun it with -run 'TestSimReplicated/seed=N$'. With
// -replica.checkpoints the brokers also checkpoint on their own goroutines, and a run is no
// longer repeatable (the invariants are checked all the same).
//
// Invariants (sim_check_test.go, sim_disk_test.go): every node applies the same entry at every
// index; after every crash each entry applied anywhere is durable on a quorum; what a node
// served during the run is where the converged group holds it; after the faults stop and the
// group converges, every applied entry is durable on all three nodes, the committed prefix is
// identical on every node's log (RaftLog.Entries: term, kind and bytes), every acknowledged
// produce (also a "duplicate" answer) is on every node at the acknowledged offsets, and every
// node serves the same messages at the same offsets in every partition, without gaps, none
// twice.

var simCheckpoints = flag.Bool("replica.checkpoints", false, "TestSimReplicated: let each broker checkpoint in the background every 2 KiB applied (not repeatable)")

var simSteps = flag.Int("replica.steps", 500, "TestSimReplicated: faulty steps per seed (then the faults stop and the group must converge)")

var simSeeds = flag.Int("replica.seeds", 0, "number of seeds TestSimReplicated runs (default 200, 30 with -short)")

const (
	simSettle   = 4000 // fault-free steps allowed to converge
	simElection = 10
	simTopic    = "sim"
	simParts    = 3
)

var errSimCrash = errors.New("simulated crash")

// errSimSourceDown: the member a snapshot is copied from is down.
var errSimSourceDown = errors.New("the snapshot's source node is down")

type simMsg struct {
	from, to uint64
	data     []byte
	at       int
}

type simNode struct {
	id       uint64
	dir      string
	b        *broker.Broker
	node     *cluster.Node // nil while down
	up       int           // step at which a down node restarts
	restarts int
	halted   bool // the node stopped on a storage error; reap crashes it
	eio      bool // its doomed sync is an I/O error, not a power loss
	killed   bool // killed in its log sync (diskKillInSync)
	// reinstall: the node stopped to install a snapshot it staged (or whose source went
	// down while it copied): reap restarts it cleanly, and the start installs what is staged.
	reinstall bool
	staged    atomic.Bool
	disk      int // guarded by sim.diskMu
}

// simReq is one client request: its idempotency key, its messages and what it was answered.
type simReq struct {
	key      string
	msgs     []broker.Message
	acked    []broker.Position // nil until acknowledged
	attempts int
	inflight int
	waiting  bool // an attempt waits for an earlier one on the same broker
}

// attempt is one Produce (or topic creation) call on one node.
type attempt struct {
	req *simReq // nil for the topic creation and a retention pass
	nd  *simNode
	// retention: the call is the node's retention pass (it proposes a retention record when
	// something can go).
	retention bool
	ctx       context.Context // ends when the call has answered
	res       chan attemptResult
	link      *link // set once proposed
	// waiter is a later attempt of the same request on the same broker, waiting for this one.
	waiter *attempt
}

type attemptResult struct {
	res broker.ProduceResult
	err error
}

// link carries an entry's outcome from the node (in) to the broker (out), so that the
// simulation sees the outcome when the node decides it, and hands it on itself.
type link struct {
	in  <-chan error
	out chan<- error
}

// proposed is what simProposer tells the simulation after raft answered a proposal.
type proposed struct {
	links []*link
	err   error
}

type sim struct {
	t     *testing.T
	shape simShape
	seed  uint64
	rng   *rand.Rand
	now   int
	// clock is the brokers' clock: a fixed base plus 10 ms per step.
	clock atomic.Int64

	nodes []*simNode // index 0 unused
	net   []simMsg
	// snapSent are the snapshot messages sent since the last delivery: (from, to).
	snapSent [][2]uint64
	group    [4]int
	oneway   [4][4]bool
	faults   bool
	rec      *powerloss.Recorder
	diskMu   sync.Mutex
	// processing is the node whose Readys process is handling; guarded by diskMu.
	processing *simNode
	proposed   chan proposed

	applied   map[uint64]appliedEntry // the first application of each index anywhere
	maxIndex  uint64
	reqs      []*simReq
	inflight  []*attempt
	topicOK   bool
	topicRun  bool  // a topic creation is in flight (a second would wait for it)
	retainRun bool  // a retention pass is in flight
	retained  int   // retention passes that ended
	dropped   int64 // offsets below the partitions' starts once converged

	seen   []observation     // what nodes served during the run (sim_check_test.go)
	images map[string][]byte // commit-log segment contents at their last sync (sim_disk_test.go)

	acked, dupAcks, unknown, refused, crashes, powerLosses, fsyncLosses, restarts, kills int
	tornTails, oldPages, warmStarts, snapshots, compactions                              int
	trace                                                                                []string
}

type appliedEntry struct {
	term uint64
	data string
}

func (s *sim) logf(format string, args ...any) {
	line := fmt.Sprintf("%5d ", s.now) + fmt.Sprintf(format, args...)
	s.trace = append(s.trace, line)
	if len(s.trace) > 200 {
		s.trace = s.trace[1:]
	}
}

func (s *sim) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("seed %d step %d: %s\nlast events:\n%s", s.seed, s.now, fmt.Sprintf(format, args...),
		strings.Join(s.trace, "\n"))
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func (s *sim) options(nd *simNode) broker.Options {
	o := broker.NewOptions(nd.dir)
	o.Replicated = true
	o.Logger = quietLogger()
	o.Now = func() time.Time { return time.UnixMilli(s.clock.Load()) }
	o.CheckpointInterval = time.Hour // checkpoints only at open and close: at chosen steps
	o.CheckpointBytes = 1 << 40
	if *simCheckpoints {
		// The checkpointer runs on its own goroutine after every few KiB applied: the run is
		// no longer repeatable, but restarts then start from checkpoints taken mid-run.
		o.CheckpointBytes = 2 << 10
	}
	o.RetentionCheckInterval = time.Hour  // the simulation runs the leader's pass (retain)
	o.SegmentBytes = s.shape.segmentBytes // small: rolls, truncations across segments, compaction
	o.IndexSegmentEntries = 16
	o.RetentionBytes = 1 << 10 // retention records move the partitions' starts during the run
	return o
}

// start opens nd's broker and node from its directory, installing first a snapshot the node
// staged before it stopped (as serve does).
func (s *sim) start(nd *simNode) {
	s.installStaged(nd)
	b, err := broker.Open(s.options(nd))
	if err != nil {
		s.fatalf("node %d: open broker after %d restarts: %v", nd.id, nd.restarts, err)
	}
	st, err := cluster.OpenStorage(nd.dir, logStore{b.RaftLog()})
	if err != nil {
		s.fatalf("node %d: open raft storage: %v", nd.id, err)
	}
	if st.IsNew() && nd.restarts > 0 {
		s.fatalf("node %d: raft state gone after a restart", nd.id)
	}
	n, err := cluster.NewNode(cluster.Config{
		ID: nd.id, Peers: []uint64{1, 2, 3}, Storage: st,
		Applier: simApplier{s: s, nd: nd, inner: applier{b}}, Applied: b.AppliedIndex(),
		Sender: simSender{s, nd.id}, ElectionTick: simElection, HeartbeatTick: 1, Logger: quietLogger(),
		Snapshots: snapshotter{
			b: b, self: nd.id, log: quietLogger(), confIndex: st.ConfIndex,
			members: func() ([]Peer, []uint64) { return simPeers, nil },
			fetch:   s.fetchSnapshotFile, staged: &nd.staged,
		},
	})
	if err != nil {
		s.fatalf("node %d: new node: %v", nd.id, err)
	}
	b.SetProposer(simProposer{s: s, inner: proposer{n}})
	nd.b, nd.node = b, n
	if b.AppliedIndex() > 0 {
		s.warmStarts++
	}
	s.logf("node %d starts (applied %d, log ends at %d)", nd.id, b.AppliedIndex(), b.RaftLog().LastIndex())
}

// How a node goes down.
const (
	crashPower = iota // power loss: what no sync covered is gone (sim_disk_test.go)
	crashKill         // kill -9: the process dies, its written bytes stay in the page cache
	crashStop         // clean restart: the node stops, the broker closes with its checkpoint
)

// crash takes nd down: the node stops, the answers it decides reach their callers, the broker
// closes (after a power loss or a kill its syncs fail, so nothing more becomes durable), and
// on a power loss everything not durable is dropped.
func (s *sim) crash(nd *simNode, why string, kind int) {
	nd.node.Halt(errSimCrash)
	nd.halted = true
	if kind != crashStop {
		s.setDisk(nd, diskDead)
	}
	s.collect()
	nd.b.Close() // its error (failed syncs) is the crash's
	switch kind {
	case crashPower:
		before := s.segments(nd)
		loss, err := s.rec.Drop(nd.dir)
		if err != nil {
			s.fatalf("node %d: power loss: %v", nd.id, err)
		}
		s.setDisk(nd, diskOK)
		torn, old := s.tear(nd, before)
		s.tornTails += torn
		s.oldPages += old
		s.powerLosses++
		s.logf("node %d loses power (%s): %d files cut, %d bytes, %d names; %d torn tails, %d old pages", nd.id, why, loss.Truncated, loss.Bytes, len(loss.Removed), torn, old)
	case crashKill:
		s.kills++
		s.logf("node %d is killed (%s)", nd.id, why)
	default:
		s.restarts++
		s.logf("node %d restarts cleanly (%s)", nd.id, why)
	}
	s.setDisk(nd, diskOK)
	nd.b, nd.node, nd.halted, nd.killed = nil, nil, false, false
	nd.up = s.now + 5 + s.rng.IntN(s.shape.downtime)
	s.crashes++
	s.checkDurable(fmt.Sprintf("after node %d went down", nd.id), 2)
}

func (s *sim) live() []*simNode {
	var out []*simNode
	for _, nd := range s.nodes[1:] {
		if nd.node != nil && !nd.halted {
			out = append(out, nd)
		}
	}
	return out
}

func (s *sim) serving() *simNode {
	for _, nd := range s.live() {
		if nd.node.Status().Serving {
			return nd
		}
	}
	return nil
}

func (s *sim) faultStep() {
	r := s.rng.Float64()
	switch {
	case r < 0.004:
		alone := 1 + s.rng.IntN(3)
		s.group = [4]int{}
		s.group[alone] = 1
		s.logf("partition: node %d isolated", alone)
	case r < 0.006:
		a := 1 + s.rng.IntN(3)
		b := 1 + (a+s.rng.IntN(2))%3
		s.oneway[a][b] = true
		s.logf("one-way partition: %d cannot reach %d", a, b)
	case r < 0.012:
		s.group = [4]int{}
		s.oneway = [4][4]bool{}
		s.logf("partitions healed")
	case r < 0.016:
		if l := s.live(); len(l) > 0 {
			s.crash(l[s.rng.IntN(len(l))], "between rounds", crashPower)
		}
	case r < 0.020:
		if l := s.live(); len(l) > 0 {
			nd := l[s.rng.IntN(len(l))]
			if s.diskOf(nd) == diskOK {
				if s.rng.IntN(3) == 0 {
					s.setDisk(nd, diskDoomedAny)
					s.logf("node %d will lose power in its next sync", nd.id)
				} else {
					s.setDisk(nd, diskDoomed)
					s.logf("node %d will lose power in its next log fsync", nd.id)
				}
				// Or the sync fails with EIO and the node is restarted without a power loss:
				// the written bytes stay, and the restart must cut them (the fail mark).
				nd.eio = s.rng.IntN(3) == 0
				if s.rng.IntN(3) == 0 {
					s.setDisk(nd, diskKillInSync)
					s.logf("node %d will be killed in its next log fsync", nd.id)
				}
			}
		}
	case r < 0.022:
		if l := s.live(); len(l) > 0 {
			s.crash(l[s.rng.IntN(len(l))], "stop", crashStop)
		}
	case r < 0.024:
		if l := s.live(); len(l) > 0 {
			s.crash(l[s.rng.IntN(len(l))], "kill -9", crashKill)
		}
	}
}

func (s *sim) deliver() {
	for _, r := range s.snapSent {
		if nd := s.nodes[r[0]]; nd.node != nil && !nd.halted {
			nd.node.ReportSnapshotNow(r[1], false)
		}
	}
	s.snapSent = s.snapSent[:0]
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
				continue
			}
			if s.rng.Float64() < 0.03 {
				keep = append(keep, simMsg{from: m.from, to: m.to, data: m.data, at: s.now + 1 + s.rng.IntN(5)})
			}
		}
		var msg pb.Message
		if err := proto.Unmarshal(m.data, &msg); err != nil {
			s.fatalf("unmarshal: %v", err)
		}
		nd.node.Deliver(&msg)
	}
	s.net = append(keep, s.net...)
}

// process runs every live node's pending Readys; a storage error is the node's power loss.
func (s *sim) process() {
	for _, nd := range s.live() {
		if err := s.processOne(nd); err != nil {
			s.stopped(nd, err)
		}
	}
}

// simKilled is the panic that kills a node in its commit-log sync (diskKillInSync).
type simKilled struct{ nd *simNode }

func (s *sim) processOne(nd *simNode) (err error) {
	s.diskMu.Lock()
	s.processing = nd
	s.diskMu.Unlock()
	defer func() {
		s.diskMu.Lock()
		s.processing = nil
		s.diskMu.Unlock()
		if r := recover(); r != nil {
			k, ok := r.(simKilled)
			if !ok || k.nd != nd {
				panic(r)
			}
			nd.node.Halt(errSimCrash)
			nd.halted, nd.killed = true, true
		}
	}()
	return nd.node.Process()
}

// stopped notes that nd's node stopped on err (it has halted); the crash that follows is
// handled by reap, between rounds.
func (s *sim) stopped(nd *simNode, err error) {
	if s.diskOf(nd) != diskDead && (errors.Is(err, cluster.ErrSnapshotStaged) || errors.Is(err, errSimSourceDown)) {
		nd.halted, nd.reinstall = true, true
		return
	}
	if s.diskOf(nd) != diskDead {
		s.fatalf("node %d stopped: %v", nd.id, err)
	}
	nd.halted = true
}

// reap crashes the nodes that stopped on a storage error (theirs, or their broker's): their
// power went in a sync.
func (s *sim) reap() {
	for _, nd := range s.nodes[1:] {
		if nd.node != nil && !nd.halted {
			select {
			case <-nd.b.Failed():
				// The broker failed on its own goroutine (a checkpoint, -replica.checkpoints):
				// the member stops the node (member.go), and so does the simulation.
				nd.node.Halt(errSimCrash)
				s.stopped(nd, nd.b.Err())
			default:
			}
		}
		if nd.node != nil && nd.halted && nd.reinstall {
			nd.reinstall = false
			s.crash(nd, "to install a snapshot", crashStop)
			continue
		}
		if nd.node != nil && nd.halted {
			s.fsyncLosses++
			if nd.killed {
				s.crash(nd, "killed in its log fsync", crashKill)
			} else if nd.eio {
				s.crash(nd, "after a sync failed with EIO", crashKill)
			} else {
				s.crash(nd, "in a sync", crashPower)
			}
		}
	}
}

// launch starts one call on a.nd. A retry of a request whose earlier attempt is in flight on
// the same broker waits for that attempt (the broker holds it until the first is settled):
// it is resumed when the first is finished. Any other call is awaited at once.
func (s *sim) launch(a *attempt, call func() (broker.ProduceResult, error)) {
	ctx, cancel := context.WithCancel(context.Background())
	a.ctx = ctx
	go func() {
		res, err := call()
		a.res <- attemptResult{res, err}
		cancel()
	}()
	if q := a.req; q != nil {
		for _, o := range s.inflight {
			if o.req == q && o.nd == a.nd {
				o.waiter, q.waiting = a, true
				return
			}
		}
	}
	s.await(a)
}

// await waits until a's call has either reached raft (then it is in flight) or answered.
func (s *sim) await(a *attempt) {
	if a.nd.halted {
		// A stopped node: the broker may still try it (and is refused); only the answer counts.
		for {
			select {
			case r := <-a.res:
				s.finish(a, r)
				return
			case <-s.proposed:
			}
		}
	}
	err := a.nd.node.TakeProposal(a.ctx)
	if errors.Is(err, context.Canceled) {
		s.finish(a, <-a.res) // answered without proposing
		return
	}
	p := <-s.proposed
	if err != nil {
		// The node stopped on a storage error in the round before the proposal: refused.
		s.stopped(a.nd, err)
		s.finish(a, <-a.res)
		return
	}
	if p.err != nil {
		s.finish(a, <-a.res)
		return
	}
	a.link = p.links[0]
	s.inflight = append(s.inflight, a)
}

// collect hands every outcome the nodes decided to its caller and records the answers.
func (s *sim) collect() {
	for progress := true; progress; {
		progress = false
		list := s.inflight
		s.inflight = nil
		for _, a := range list {
			select {
			case err := <-a.link.in:
				a.link.out <- err
				s.finish(a, <-a.res)
				progress = true
			default:
				s.inflight = append(s.inflight, a)
			}
		}
	}
}

// finish records an attempt's answer.
func (s *sim) finish(a *attempt, r attemptResult) {
	if w := a.waiter; w != nil {
		defer func() {
			w.req.waiting = false
			s.await(w)
		}()
	}
	if a.retention {
		s.retainRun = false
		s.retained++
		return
	}
	if a.req == nil {
		s.topicRun = false
		if r.err == nil {
			s.topicOK = true
		}
		s.logf("node %d: create topic: %v", a.nd.id, r.err)
		return
	}
	q := a.req
	q.inflight--
	if r.err != nil {
		switch {
		case errors.Is(r.err, broker.ErrNotLeader), errors.Is(r.err, broker.ErrUnknownTopic),
			errors.Is(r.err, broker.ErrClosed), errors.Is(r.err, broker.ErrBackpressure):
			s.refused++
			if !s.faults {
				s.logf("node %d: %s refused: %v", a.nd.id, q.key, r.err)
			}
		case errors.Is(r.err, broker.ErrOutcomeUnknown):
			// The broker's sentinel: the gateway answers 503 outcome_unknown for it alone.
			s.unknown++
		default:
			s.fatalf("node %d: produce %s: unexpected error %v", a.nd.id, q.key, r.err)
		}
		return
	}
	got := r.res.Offsets
	if len(got) != len(q.msgs) {
		s.fatalf("node %d: produce %s of %d messages answered %d offsets", a.nd.id, q.key, len(q.msgs), len(got))
	}
	if q.acked != nil && fmt.Sprint(q.acked) != fmt.Sprint(got) {
		s.fatalf("node %d: produce %s answered %v (duplicate %v), earlier %v", a.nd.id, q.key, got, r.res.Duplicate, q.acked)
	}
	if q.acked == nil {
		q.acked = got
		s.logf("node %d: %s acknowledged at %v (duplicate %v)", a.nd.id, q.key, got, r.res.Duplicate)
	}
	if r.res.Duplicate {
		s.dupAcks++
	} else {
		s.acked++
	}
}

// produce sends request q (new or a retry) to nd.
func (s *sim) produce(q *simReq, nd *simNode) {
	q.attempts++
	q.inflight++
	msgs := make([]broker.Message, len(q.msgs))
	copy(msgs, q.msgs)
	b := nd.b
	s.launch(&attempt{req: q, nd: nd, res: make(chan attemptResult, 1)}, func() (broker.ProduceResult, error) {
		return b.Produce(context.Background(), simTopic, msgs, q.key)
	})
}

func (s *sim) newReq() *simReq {
	q := &simReq{key: fmt.Sprintf("k%d", len(s.reqs))}
	for i := range 1 + s.rng.IntN(3) {
		q.msgs = append(q.msgs, broker.Message{
			Partition: s.rng.IntN(simParts),
			Value:     fmt.Appendf(nil, "s%d-%s-m%d", s.seed, q.key, i),
		})
	}
	s.reqs = append(s.reqs, q)
	return q
}

// retain runs nd's retention pass: on the serving leader it proposes a retention record when
// a partition can let go of index segments, and returns once the record is applied there.
func (s *sim) retain(nd *simNode) {
	if s.retainRun {
		return
	}
	s.retainRun = true
	b := nd.b
	s.launch(&attempt{nd: nd, retention: true, res: make(chan attemptResult, 1)}, func() (broker.ProduceResult, error) {
		b.EnforceRetention()
		return broker.ProduceResult{}, nil
	})
}

// client is one step of the client: create the topic first, then produce new requests and
// retry unanswered ones, mostly through the serving leader.
func (s *sim) client() {
	l := s.live()
	if len(l) == 0 {
		return
	}
	nd := s.serving()
	if nd == nil || s.rng.Float64() < 0.15 {
		nd = l[s.rng.IntN(len(l))]
	}
	if !s.topicOK {
		if s.topicRun {
			return
		}
		s.topicRun = true
		b := nd.b
		s.launch(&attempt{nd: nd, res: make(chan attemptResult, 1)}, func() (broker.ProduceResult, error) {
			_, err := b.CreateTopic(simTopic, broker.TopicConfig{Partitions: simParts})
			return broker.ProduceResult{}, err
		})
		return
	}
	if s.rng.Float64() < s.shape.retain {
		s.retain(nd)
		return
	}
	var retry []*simReq
	for _, q := range s.reqs {
		if q.acked == nil && !q.waiting {
			retry = append(retry, q)
		}
	}
	if len(retry) > 0 && s.rng.Float64() < 0.3 {
		s.produce(retry[s.rng.IntN(len(retry))], nd)
		return
	}
	s.produce(s.newReq(), nd)
}

func (s *sim) step() {
	s.now++
	s.clock.Add(10)
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
		if s.rng.Float64() < 0.5 {
			nd.node.Tick()
		}
	}
	s.process()
	if s.rng.Float64() < 0.3 {
		s.client()
	}
	s.process()
	if s.rng.Float64() < 0.08 {
		s.compact()
	}
	s.collect()
	s.reap()
	if s.rng.Float64() < 0.2 {
		s.observe()
	}
}
