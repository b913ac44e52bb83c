package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// loopProposer is a one-node stand-in for raft: each proposed entry is appended to
// the broker's raft log, synced and applied at once, unless hold is set, in which case the
// proposal is handed to the test (held) to answer itself.
type loopProposer struct {
	b    *Broker
	hold bool
	held chan heldProposal

	mu   sync.Mutex
	term uint64
	next uint64
}

type heldProposal struct {
	data []byte
	out  chan<- error
}

func (p *loopProposer) Serving() (uint64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.term, true
}

func (p *loopProposer) Propose(term uint64, entries [][]byte, outs []chan<- error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, data := range entries {
		out := outs[i]
		if p.hold {
			p.held <- heldProposal{data: data, out: out}
			continue
		}
		p.next++
		out <- p.commit(p.next, data)
	}
	return nil
}

func (p *loopProposer) commit(index uint64, data []byte) error {
	l := p.b.RaftLog()
	if err := l.Append([]RaftEntry{{Index: index, Term: p.term, Data: data}}); err != nil {
		return err
	}
	if err := l.Sync(); err != nil {
		return err
	}
	return p.b.ApplyEntry(index, p.term, data)
}

// TestReplicatedRetryWaitsForTheFirstAttempt: in cluster mode a produce request is "done" for
// the flusher when its entry is proposed, long before it is committed. A retry with the same
// Idempotency-Key that arrives while the first attempt is in flight must wait for the first
// attempt's outcome: answering "duplicate" with the offsets the leader assigned is a promise
// that the message is stored, and the entry may still be lost with the leadership (the first
// attempt then ends outcome_unknown, and a message nobody stored was acknowledged).
func TestReplicatedRetryWaitsForTheFirstAttempt(t *testing.T) {
	o := manualOptions(t, t.TempDir())
	o.Replicated = true
	b := mustOpen(t, o)
	defer b.Close()
	p := &loopProposer{b: b, held: make(chan heldProposal, 4), term: 1}
	b.SetProposer(p)
	if created, err := b.CreateTopic("t", TopicConfig{Partitions: 1}); err != nil || !created {
		t.Fatalf("create topic: %v %v", created, err)
	}
	p.mu.Lock()
	p.hold = true
	p.mu.Unlock()

	type answer struct {
		res ProduceResult
		err error
	}
	produce := func() <-chan answer {
		c := make(chan answer, 1)
		go func() {
			res, err := b.Produce(context.Background(), "t", []Message{msg("payment-1")}, "order-1")
			c <- answer{res, err}
		}()
		return c
	}
	first := produce()
	h := <-p.held // proposed, not committed
	second := produce()
	select {
	case a := <-second:
		t.Fatalf("the retry was answered %+v, %v while the first attempt's entry was neither committed nor lost", a.res, a.err)
	case <-time.After(200 * time.Millisecond):
	}
	// The leadership goes and the entry with it; this node leads again in term 2.
	p.mu.Lock()
	p.term = 2
	p.mu.Unlock()
	h.out <- fmt.Errorf("%w: leadership lost", ErrOutcomeUnknown)
	if a := <-first; !errors.Is(a.err, ErrOutcomeUnknown) {
		t.Fatalf("first attempt: %+v, %v; want outcome unknown", a.res, a.err)
	}
	// The retry now proposes the message itself; this time it commits.
	h2 := <-p.held
	p.mu.Lock()
	p.next++
	h2.out <- p.commit(p.next, h2.data)
	p.mu.Unlock()
	a := <-second
	if a.err != nil || a.res.Duplicate || len(a.res.Offsets) != 1 || a.res.Offsets[0].Offset != 0 {
		t.Fatalf("retry: %+v, %v; want stored at offset 0, not a duplicate", a.res, a.err)
	}
	if got := values(fetchAll(t, b, "t", 0)); fmt.Sprint(got) != "[payment-1]" {
		t.Fatalf("partition holds %v", got)
	}
}

// TestReplicatedLostEntryIsOutcomeUnknown: whatever error the proposer reports for an entry it
// took (the cluster package has its own ErrOutcomeUnknown), Produce answers this package's
// ErrOutcomeUnknown, the one error the gateway answers 503 outcome_unknown (retry with the same
// key) rather than 500.
func TestReplicatedLostEntryIsOutcomeUnknown(t *testing.T) {
	o := manualOptions(t, t.TempDir())
	o.Replicated = true
	b := mustOpen(t, o)
	defer b.Close()
	p := &loopProposer{b: b, held: make(chan heldProposal, 4), term: 1}
	b.SetProposer(p)
	if _, err := b.CreateTopic("t", TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.hold = true
	p.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		_, err := b.Produce(context.Background(), "t", []Message{msg("payment-1")}, "order-1")
		done <- err
	}()
	h := <-p.held
	h.out <- errors.New("cluster: outcome unknown: leadership lost after proposing")
	if err := <-done; !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("produce whose entry was lost: %v; want ErrOutcomeUnknown", err)
	}
}
