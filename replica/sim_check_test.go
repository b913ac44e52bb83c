package replica

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"testing/cryptotest"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/fsutil"
	"github.com/imagomq/imago/internal/powerloss"
)

// runSim runs one seed (sim_test.go) and returns a digest of what happened, for the
// determinism check.
func runSim(t *testing.T, seed uint64) string {
	return runSimWith(t, seed, simShape{downtime: 60, retain: 0.05, segmentBytes: 2 << 10})
}

// simShape varies the run: how long a crashed node stays down (up to downtime steps) and how
// often a client step is a retention pass, and the log's segment size.
type simShape struct {
	downtime     int
	retain       float64
	segmentBytes int64 // of the commit log: small, so that it rolls and compaction has whole segments to delete
}

func runSimWith(t *testing.T, seed uint64, shape simShape) string {
	cryptotest.SetGlobalRandom(t, seed)
	root := t.TempDir()
	s := &sim{
		t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x5eed)),
		rec: powerloss.New(), proposed: make(chan proposed), applied: map[uint64]appliedEntry{}, faults: true,
		images: map[string][]byte{}, shape: shape,
	}
	s.clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli())
	s.nodes = []*simNode{nil}
	for id := uint64(1); id <= 3; id++ {
		s.nodes = append(s.nodes, &simNode{id: id, dir: filepath.Join(root, fmt.Sprintf("node%d", id))})
	}
	restore := fsutil.SetHook(s.hook)
	defer restore()
	defer s.shutdown()
	defer func() {
		if r := recover(); r != nil {
			s.fatalf("panic: %v\n%s", r, debug.Stack())
		}
	}()
	for _, nd := range s.nodes[1:] {
		s.start(nd)
	}
	for s.now < *simSteps {
		s.step()
	}
	s.settle()
	s.check()
	lastSim = s
	h := fnv.New64a()
	for i := uint64(1); i <= s.maxIndex; i++ {
		fmt.Fprintf(h, "%d/%d/%x;", i, s.applied[i].term, s.applied[i].data)
	}
	return fmt.Sprintf("committed=%d requests=%d acked=%d duplicates=%d unknown=%d refused=%d crashes=%d power=%d fsync=%d restarts=%d kills=%d steps=%d hash=%x",
		s.maxIndex, len(s.reqs), s.acked, s.dupAcks, s.unknown, s.refused, s.crashes, s.powerLosses, s.fsyncLosses, s.restarts, s.kills, s.now, h.Sum64())
}

// lastSim is the last seed's simulation, for the totals TestSimReplicated prints.
var lastSim *sim

// shutdown stops every node and closes every broker, also after a failure: callers still
// waiting get an error, and reports of proposals nobody waits for any more are drained, so no
// goroutine is left behind.
func (s *sim) shutdown() {
	stop, drained := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drained)
		for {
			select {
			case <-s.proposed:
			case <-stop:
				return
			}
		}
	}()
	for _, nd := range s.nodes[1:] {
		if nd.node != nil {
			nd.node.Halt(errSimCrash)
			nd.halted = true
		}
	}
	for _, a := range s.inflight {
		select {
		case a.link.out <- errSimCrash:
		default:
		}
	}
	s.inflight = nil
	for _, nd := range s.nodes[1:] {
		if nd.b != nil {
			nd.b.Close()
			nd.b, nd.node = nil, nil
		}
	}
	close(stop)
	<-drained
}

// settle stops the faults, brings every node up and retries every unanswered request through
// the serving leader until the group has converged: every request acknowledged, nothing in
// flight, every node has applied everything the leader committed.
func (s *sim) settle() {
	s.faults = false
	s.group = [4]int{}
	s.oneway = [4][4]bool{}
	for _, nd := range s.nodes[1:] {
		if d := s.diskOf(nd); d == diskDoomed || d == diskDoomedAny || d == diskKillInSync {
			s.setDisk(nd, diskOK)
		}
		nd.up = s.now
	}
	s.logf("faults stop")
	s.newReq() // one request of the settled group, at least
	for end := s.now + simSettle; s.now < end; {
		s.step()
		if l := s.serving(); l != nil && s.topicOK {
			for _, q := range s.reqs {
				if q.acked == nil && q.inflight == 0 {
					s.produce(q, l)
					s.process()
					s.collect()
				}
			}
		}
		if s.converged() {
			return
		}
	}
	var open int
	for _, q := range s.reqs {
		if q.acked == nil {
			open++
		}
	}
	var nodes []string
	for _, nd := range s.nodes[1:] {
		if nd.node == nil {
			nodes = append(nodes, fmt.Sprintf("node %d down", nd.id))
			continue
		}
		st := nd.node.Status()
		nodes = append(nodes, fmt.Sprintf("node %d %s term %d commit %d applied %d log %d-%d halted %v (%v)", nd.id, st.Role, st.Term, st.Commit, st.Applied,
			nd.b.RaftLog().FirstIndex(), nd.b.RaftLog().LastIndex(), nd.halted, st.Err))
	}
	s.fatalf("no convergence within %d fault-free steps: %d requests unanswered, %d in flight, leader %v; %s", simSettle, open, len(s.inflight), s.serving() != nil, strings.Join(nodes, "; "))
}

func (s *sim) converged() bool {
	l := s.serving()
	if l == nil || !s.topicOK || len(s.inflight) > 0 {
		return false
	}
	for _, q := range s.reqs {
		if q.acked == nil {
			return false
		}
	}
	commit := l.node.Status().Commit
	if commit != l.b.RaftLog().LastIndex() {
		return false
	}
	for _, nd := range s.nodes[1:] {
		if nd.node == nil || nd.node.Status().Applied != commit || nd.b.AppliedIndex() != commit {
			return false
		}
	}
	return true
}

// check asserts the invariants on the converged group.
func (s *sim) check() {
	s.checkDurable("converged", 3)
	commit := s.serving().node.Status().Commit
	if s.maxIndex > commit {
		s.fatalf("entries up to %d were applied, but the converged group committed only %d: committed entries were lost", s.maxIndex, commit)
	}
	// The committed prefix is the same on every node's log, and it is what was applied.
	// Below the highest compaction point only some nodes still hold the entries.
	lo := uint64(1)
	for _, nd := range s.nodes[1:] {
		lo = max(lo, nd.b.RaftLog().FirstIndex())
	}
	var ref []logEntry
	for _, nd := range s.nodes[1:] {
		ents, err := nd.b.RaftLog().Entries(lo, commit+1, math.MaxUint64)
		if err != nil {
			s.fatalf("node %d: read raft entries %d-%d: %v", nd.id, lo, commit, err)
		}
		if uint64(len(ents)) != commit-lo+1 {
			s.fatalf("node %d: %d raft entries read from %d up to the commit index %d", nd.id, len(ents), lo, commit)
		}
		got := make([]logEntry, len(ents))
		for i, e := range ents {
			got[i] = logEntry{index: e.Index, term: e.Term, kind: e.Kind, data: e.Data}
			a, ok := s.applied[e.Index]
			want := string(e.Data)
			if e.Kind != 0 {
				want = "" // a membership change reaches the applier as its index only
			}
			if !ok || a.term != e.Term || a.data != want {
				s.fatalf("node %d: committed entry %d (term %d) is not what was applied there (term %d, found %v)", nd.id, e.Index, e.Term, a.term, ok)
			}
		}
		if ref == nil {
			ref = got
			continue
		}
		for i := range got {
			if got[i].index != ref[i].index || got[i].term != ref[i].term || got[i].kind != ref[i].kind || !bytes.Equal(got[i].data, ref[i].data) {
				s.fatalf("node %d: committed entry %d differs from node 1's: term %d kind %d %d bytes, node 1 term %d kind %d %d bytes",
					nd.id, got[i].index, got[i].term, got[i].kind, len(got[i].data), ref[i].term, ref[i].kind, len(ref[i].data))
			}
		}
	}
	// Every node serves the same messages at the same offsets, without gaps, from the same
	// start (retention records move it on every node alike).
	var parts [][]string // node 1's partitions: the value at each offset, "" below the start
	for _, nd := range s.nodes[1:] {
		var mine [][]string
		for p := range simParts {
			start := s.startOffset(nd, p)
			res, err := nd.b.Fetch(context.Background(), simTopic, p, broker.FetchOptions{Offset: start, MaxMessages: 1 << 20, MaxBytes: 1 << 30})
			if err != nil {
				s.fatalf("node %d: fetch partition %d from its start %d: %v", nd.id, p, start, err)
			}
			if res.NextOffset != res.EndOffset {
				s.fatalf("node %d: partition %d fetch ends at %d, readable end %d", nd.id, p, res.NextOffset, res.EndOffset)
			}
			vals := make([]string, start, start+int64(len(res.Messages)))
			for i, m := range res.Messages {
				if m.Offset != start+int64(i) {
					s.fatalf("node %d: partition %d: message %d from the start %d has offset %d", nd.id, p, i, start, m.Offset)
				}
				vals = append(vals, string(m.Value))
			}
			mine = append(mine, vals)
		}
		if parts == nil {
			parts = mine
			continue
		}
		for p := range simParts {
			if fmt.Sprint(mine[p]) != fmt.Sprint(parts[p]) {
				s.fatalf("node %d: partition %d holds %d messages %v; node 1 holds %d %v", nd.id, p, len(mine[p]), mine[p], len(parts[p]), parts[p])
			}
		}
	}
	s.checkObserved(parts)
	for p := range simParts {
		s.dropped += s.startOffset(s.nodes[1], p)
	}
	// Every acknowledged request is there, at its offsets, once.
	seen := map[string]broker.Position{}
	for p, vals := range parts {
		for off, v := range vals {
			if v == "" {
				continue // below the start: retention let it go
			}
			if prev, ok := seen[v]; ok {
				s.fatalf("message %q is stored twice: at %v and at %d/%d", v, prev, p, off)
			}
			seen[v] = broker.Position{Partition: p, Offset: int64(off)}
		}
	}
	for _, q := range s.reqs {
		for i, m := range q.msgs {
			want := q.acked[i]
			if vals := parts[want.Partition]; want.Offset < int64(len(vals)) && vals[want.Offset] == "" {
				continue // acknowledged below the start: retention let it go
			}
			if got, ok := seen[string(m.Value)]; !ok || got != want {
				s.fatalf("request %s message %d (%q) was acknowledged at %v; the nodes hold it at %v (present: %v)", q.key, i, m.Value, want, got, ok)
			}
			delete(seen, string(m.Value))
		}
	}
	if len(seen) > 0 {
		s.fatalf("%d stored messages belong to no request", len(seen))
	}
}

// observation is what one node served at one offset during the run.
type observation struct {
	node      uint64
	step      int
	partition int
	offset    int64
	value     string
}

// observe fetches a random partition from a random live node: what a node serves must be
// what every node serves there in the end (nothing uncommitted, nothing later lost).
func (s *sim) observe() {
	l := s.live()
	if len(l) == 0 || !s.topicOK {
		return
	}
	nd := l[s.rng.IntN(len(l))]
	p := s.rng.IntN(simParts)
	info, err := nd.b.Topic(simTopic)
	if err != nil {
		return // the topic is not applied there yet
	}
	start := info.Partitions[p].StartOffset
	res, err := nd.b.Fetch(context.Background(), simTopic, p, broker.FetchOptions{Offset: start, MaxMessages: 1 << 20, MaxBytes: 1 << 30})
	if err != nil {
		s.fatalf("node %d: fetch partition %d from its start %d: %v", nd.id, p, start, err)
	}
	for i, m := range res.Messages {
		if m.Offset != start+int64(i) {
			s.fatalf("node %d: partition %d: message %d has offset %d", nd.id, p, i, m.Offset)
		}
	}
	if n := len(res.Messages); n > 0 {
		m := res.Messages[n-1]
		s.seen = append(s.seen, observation{node: nd.id, step: s.now, partition: p, offset: m.Offset, value: string(m.Value)})
	}
}

// checkObserved asserts that everything served during the run is where it was served.
func (s *sim) checkObserved(parts [][]string) {
	for _, o := range s.seen {
		if o.offset < int64(len(parts[o.partition])) && parts[o.partition][o.offset] == "" {
			continue // served before retention let it go
		}
		if o.offset >= int64(len(parts[o.partition])) || parts[o.partition][o.offset] != o.value {
			s.fatalf("node %d served %q at %d/%d at step %d; the converged group does not hold it there", o.node, o.value, o.partition, o.offset, o.step)
		}
	}
}

// startOffset is partition p's start on nd.
func (s *sim) startOffset(nd *simNode, p int) int64 {
	info, err := nd.b.Topic(simTopic)
	if err != nil {
		s.fatalf("node %d: topic: %v", nd.id, err)
	}
	return info.Partitions[p].StartOffset
}

type logEntry struct {
	index, term uint64
	kind        uint8
	data        []byte
}

func TestSimReplicated(t *testing.T) {
	seeds := *simSeeds
	if seeds == 0 {
		seeds = 200
		if testing.Short() {
			seeds = 30
		}
	}
	var sums []string
	var tornTotal, oldTotal, warmTotal, snapTotal, compTotal int
	var dropped int64
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			sum := runSim(t, seed)
			sums = append(sums, sum)
			tornTotal += lastSim.tornTails
			oldTotal += lastSim.oldPages
			warmTotal += lastSim.warmStarts
			snapTotal += lastSim.snapshots
			compTotal += lastSim.compactions
			dropped += lastSim.dropped
			t.Log(sum)
		})
	}
	var committed, requests, power, fsync, restarts, kills, unknown, dups int
	for _, sum := range sums {
		var c, r, a, d, u, rf, cr, pw, fs, rs, kl, st int
		var h string
		fmt.Sscanf(sum, "committed=%d requests=%d acked=%d duplicates=%d unknown=%d refused=%d crashes=%d power=%d fsync=%d restarts=%d kills=%d steps=%d hash=%s",
			&c, &r, &a, &d, &u, &rf, &cr, &pw, &fs, &rs, &kl, &st, &h)
		kills += kl
		committed += c
		requests += r
		power += pw
		fsync += fs
		restarts += rs
		unknown += u
		dups += d
	}
	t.Logf("torn tails kept %d, old pages brought back %d, starts from a checkpoint with entries applied %d, offsets let go by retention records %d, log compactions %d, snapshots installed %d", tornTotal, oldTotal, warmTotal, dropped, compTotal, snapTotal)
	t.Logf("%d seeds: %d entries committed, %d requests, %d outcome-unknown answers, %d duplicate answers, %d power losses (%d in an fsync), %d kills, %d clean restarts",
		len(sums), committed, requests, unknown, dups, power, fsync, kills, restarts)
}

func TestSimReplicatedIsDeterministic(t *testing.T) {
	var sums [2]string
	for i := range sums {
		t.Run(fmt.Sprintf("run=%d", i), func(t *testing.T) { sums[i] = runSim(t, 3) })
	}
	if sums[0] != sums[1] {
		t.Fatalf("seed 3 ran differently twice:\n%s\n%s", sums[0], sums[1])
	}
}
