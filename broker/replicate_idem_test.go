package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// heldProposer is a Proposer that stands in for raft: it appends proposed entries to the
// broker's raft log at once and, in auto mode, applies them at once; otherwise it holds them
// until the test applies them (commit) or fails them (leadership lost: never committed).
type heldProposer struct {
	b    *Broker
	term uint64

	mu   sync.Mutex
	auto bool
	held []heldEntry
}

type heldEntry struct {
	index uint64
	data  []byte
	ch    chan<- error
}

func (p *heldProposer) Serving() (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.term, true
}

func (p *heldProposer) Propose(term uint64, entries [][]byte, outs []chan<- error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	next := p.b.RaftLog().LastIndex() + 1
	var ents []RaftEntry
	var hs []heldEntry
	for i, data := range entries {
		ents = append(ents, RaftEntry{Index: next + uint64(i), Term: term, Data: data})
		hs = append(hs, heldEntry{index: next + uint64(i), data: data, ch: outs[i]})
	}
	if err := p.b.RaftLog().Append(ents); err != nil {
		return err
	}
	if err := p.b.RaftLog().Sync(); err != nil {
		return err
	}
	if !p.auto {
		p.held = append(p.held, hs...)
		return nil
	}
	for _, h := range hs {
		h.ch <- p.b.ApplyEntry(h.index, p.term, h.data)
	}
	return nil
}

func (p *heldProposer) heldCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.held)
}

// failHeld ends every held entry with an unknown outcome, as when the leader loses its
// leadership and the next leader truncates the uncommitted suffix; this node then leads again
// in a later term, and applies what it is proposed from then on.
func (p *heldProposer) failHeld(t *testing.T) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.held) > 0 {
		if err := p.b.RaftLog().truncate(p.held[0].index); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range p.held {
		h.ch <- fmt.Errorf("%w: leadership lost after proposing at index %d", ErrOutcomeUnknown, h.index)
	}
	p.held = nil
	p.term++
	p.auto = true
}

// A retry with the same Idempotency-Key that arrives while the first attempt is proposed but
// not yet committed must not be answered "duplicate" (an acknowledgement) before the first
// attempt is applied: the entry may never be committed. Found by the three-process cluster
// test (TestClusterOneWayPartition: a "duplicate" answer for offsets that a leader fetch right
// after it did not show yet).
func TestReplicatedDuplicateWaitsForCommit(t *testing.T) {
	opts := manualOptions(t, t.TempDir())
	opts.Replicated = true
	b, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := &heldProposer{b: b, term: 1, auto: true}
	b.SetProposer(p)
	if _, err := b.CreateTopic("t", TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.auto = false
	p.mu.Unlock()

	msgs := []Message{{Value: []byte(`"one"`), ValueJSON: true}}
	type result struct {
		res ProduceResult
		err error
	}
	first := make(chan result, 1)
	go func() {
		res, err := b.Produce(context.Background(), "t", msgs, "k")
		first <- result{res, err}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for p.heldCount() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first attempt was never proposed")
		}
		time.Sleep(time.Millisecond)
	}
	retry := make(chan result, 1)
	go func() {
		res, err := b.Produce(context.Background(), "t", msgs, "k")
		retry <- result{res, err}
	}()
	// The retry has nothing to wait for but the first attempt's outcome; give it time to
	// answer wrongly.
	select {
	case r := <-retry:
		if r.err == nil {
			t.Fatalf("the retry was acknowledged (%+v) while the first attempt was proposed and not committed", r.res)
		}
		t.Logf("retry answered %v before the first attempt's outcome", r.err)
	case <-time.After(200 * time.Millisecond):
	}
	// The entry is never committed: the first attempt's outcome is unknown, and the retry
	// must not claim the message is stored.
	p.failHeld(t)
	if r := <-first; !errors.Is(r.err, ErrOutcomeUnknown) {
		t.Fatalf("first attempt: %+v, %v; want ErrOutcomeUnknown", r.res, r.err)
	}
	select {
	case r := <-retry:
		if r.err == nil && r.res.Duplicate {
			t.Fatalf("the retry answered duplicate %+v for an entry that was never committed", r.res)
		}
		if r.err != nil && !errors.Is(r.err, ErrOutcomeUnknown) {
			t.Fatalf("retry: %v", r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the retry did not return after the first attempt failed")
	}
}

// A checkpoint taken while an entry is being applied must not record the entry's records in
// the partition indexes under a raft index that does not include it: after a restart raft
// applies the entries after the checkpoint's raft index again, and one already indexed stops
// the node ("index does not match the log"). ApplyEntry indexes the records under stateMu,
// releases it, and takes it again to advance the applied index; a checkpoint that was waiting
// for stateMu runs in between when the first part took long, as it does for the first message
// of a partition (its index segment is created). Found by the three-process cluster test
// (TestClusterKillFollower: a follower killed and restarted stopped on apply of entry 7, the
// first message of its partition).
func TestReplicatedCheckpointMatchesAppliedIndex(t *testing.T) {
	dir := t.TempDir()
	opts := manualOptions(t, dir)
	opts.Replicated = true
	b, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p := &heldProposer{b: b, term: 1, auto: true}
	b.SetProposer(p)
	const topics, parts = 2, 64
	for i := 0; i < topics; i++ {
		if _, err := b.CreateTopic(fmt.Sprintf("t%d", i), TopicConfig{Partitions: parts}); err != nil {
			t.Fatal(err)
		}
	}
	// The raft index of the entry holding each partition's first message.
	var mu sync.Mutex
	entryOf := map[[2]int64]uint64{}
	done := make(chan struct{})
	defer func() { b.Close(); <-done }()
	go func() {
		defer close(done)
		for i := 0; i < topics; i++ {
			for part := 0; part < parts; part++ {
				before := b.RaftLog().LastIndex()
				if _, err := b.Produce(context.Background(), fmt.Sprintf("t%d", i), []Message{{Value: []byte(`1`), ValueJSON: true, Partition: part}}, ""); err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("produce: %v", err)
					}
					return
				}
				id := b.topicsByName()[fmt.Sprintf("t%d", i)].id
				mu.Lock()
				entryOf[[2]int64{int64(id), int64(part)}] = before + 1
				mu.Unlock()
			}
		}
	}()
	checks := 0
	for {
		select {
		case <-done:
			if checks == 0 {
				t.Fatal("no checkpoint was checked")
			}
			t.Logf("%d checkpoints checked", checks)
			return
		default:
		}
		if err := b.checkpoint(); err != nil {
			t.Fatal(err)
		}
		cp, err := loadCheckpoint(dir)
		if err != nil || cp == nil {
			t.Fatalf("load checkpoint: %v", err)
		}
		checks++
		mu.Lock()
		for _, part := range cp.Partitions {
			if part.End == 0 {
				continue
			}
			idx, ok := entryOf[[2]int64{int64(part.Topic), int64(part.Partition)}]
			if ok && idx > cp.RaftIndex {
				mu.Unlock()
				t.Fatalf("checkpoint %d covers raft entries up to %d, but partition %d/%d's end %d includes entry %d: a restart applies it again and stops",
					checks, cp.RaftIndex, part.Topic, part.Partition, part.End, idx)
			}
		}
		mu.Unlock()
	}
}
