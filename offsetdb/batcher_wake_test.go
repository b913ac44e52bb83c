package offsetdb

import (
	"context"
	"testing"
	"time"
)

// A flusher waiting for its turn is woken when a flush can start, not by
// every commit that joins the queue: filling a batch of 16 commits behind a
// running flush wakes the idle flusher once or twice, not 16 times. Each
// wake-up is a goroutine switch on CPUs the database needs too.
func TestGroupCommitWakesFlusherOncePerFlush(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, g := gatedBatcher(t)
	big := make([]Offset, 16)
	for i := range big {
		big[i] = Offset{Group: "g", Topic: "big", Partition: i, Next: 1}
	}
	first := make(chan error, 1)
	go func() { first <- b.Commit(ctx, big) }()
	<-g.entered
	before := b.wakeups.Load()

	results := make(chan error, 16)
	for i := range 16 {
		go func() { results <- b.Commit(ctx, []Offset{{Group: "g", Topic: "small", Partition: i, Next: 1}}) }()
		// Let the idle flusher take any wake-up this commit sent before the
		// next one joins, so that every wake-up sent is counted.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Microsecond) {
			b.mu.Lock()
			n := b.queued
			b.mu.Unlock()
			if (n == i+1 || i == 15) && len(b.wake) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("commit %d: %d queued, %d wake-ups pending", i, n, len(b.wake))
			}
		}
	}
	for deadline := time.Now().Add(10 * time.Second); len(g.flushSizes()) < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second flusher did not start once 16 offsets were queued")
		}
	}
	if w := b.wakeups.Load() - before; w > 2 {
		t.Errorf("the idle flusher woke %d times while 16 commits filled one batch, want at most 2", w)
	}
	g.open()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range 16 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
}
