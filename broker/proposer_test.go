package broker

import (
	"sync"
	"sync/atomic"
	"testing"
)

// TestCurrentProposerConcurrent: once SetProposer ran, every caller sees the proposer, however
// many look at once. Taking it out of a one-slot channel and putting it back left the slot
// empty for a moment, and a produce or topic creation racing the leader's retention pass was
// refused with ErrNotLeader on the leader.
func TestCurrentProposerConcurrent(t *testing.T) {
	o := manualOptions(t, t.TempDir())
	o.Replicated = true
	b := mustOpen(t, o)
	defer b.Close()
	b.SetProposer(&loopProposer{b: b, term: 1})
	var missed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				if b.currentProposer() == nil {
					missed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := missed.Load(); n > 0 {
		t.Fatalf("%d of 160000 concurrent looks found no proposer", n)
	}
}
