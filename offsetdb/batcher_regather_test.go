package offsetdb

import (
	"context"
	"slices"
	"testing"
	"time"
)

// regatherBatcher is a Batcher with one flusher over a gatedStore of a file
// store, waiting at most regather for released commits to come back.
func regatherBatcher(t *testing.T, regather time.Duration) (*Batcher, *gatedStore) {
	t.Helper()
	real, err := OpenFile(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedStore{Store: real, entered: make(chan struct{}), gate: make(chan struct{})}
	b := NewBatcher(g, GroupCommitConfig{Flushers: 1, Regather: regather}, quietLogger())
	t.Cleanup(func() { b.Close() })
	t.Cleanup(g.open) // runs first
	return b, g
}

// holdFirstFlush commits partition 0 (held in the first flush) from a
// committer that commits again as soon as that returns, if again is set,
// queues 15 more commits behind the held flush, keeps the flush running for
// hold (the flush's duration bounds the wait for returning commits) and
// lets it finish. It returns the channel of the 16 or 17 commits' results.
func holdFirstFlush(t *testing.T, b *Batcher, g *gatedStore, again bool, hold time.Duration) chan error {
	t.Helper()
	ctx := context.Background()
	results := make(chan error, 17)
	go func() {
		err := b.Commit(ctx, []Offset{{Group: "g", Topic: "t", Partition: 0, Next: 1}})
		results <- err
		if err == nil && again {
			results <- b.Commit(ctx, []Offset{{Group: "g", Topic: "t", Partition: 0, Next: 2}})
		}
	}()
	<-g.entered
	for i := 1; i < 16; i++ {
		go func() { results <- b.Commit(ctx, []Offset{{Group: "g", Topic: "t", Partition: i, Next: 1}}) }()
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		b.mu.Lock()
		n := b.queued
		b.mu.Unlock()
		if n == 15 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d commits queued behind the held flush, want 15", n)
		}
	}
	time.Sleep(hold) // not a synchronization: the held flush's duration
	g.open()
	return results
}

// The committers a flush releases come back into one flush: with 15 commits
// queued behind a flush of one, the flusher does not send the 15 alone as
// soon as that flush ends and the returning commit as a third flush, but
// waits for it and sends the 16 together (one transaction instead of two).
func TestGroupCommitRegathersReleasedCommits(t *testing.T) {
	t.Parallel()
	b, g := regatherBatcher(t, time.Minute)
	results := holdFirstFlush(t, b, g, true, 200*time.Millisecond)
	for range 17 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if s := g.flushSizes(); !slices.Equal(s, []int{1, 16}) {
		t.Fatalf("flush sizes %v, want [1 16]: the commit the first flush released joins the 15 queued", s)
	}
	if o := mustGet(t, b, "g", "t", 0); o.Next != 2 {
		t.Fatalf("partition 0 at %d, want 2", o.Next)
	}
}

// A released commit that does not come back delays the next flush by at
// most Regather (and half the last flush's duration), not forever.
func TestGroupCommitRegatherIsBounded(t *testing.T) {
	t.Parallel()
	b, g := regatherBatcher(t, 20*time.Millisecond)
	results := holdFirstFlush(t, b, g, false, 0)
	for range 16 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if s := g.flushSizes(); !slices.Equal(s, []int{1, 15}) {
		t.Fatalf("flush sizes %v, want [1 15]", s)
	}
}
