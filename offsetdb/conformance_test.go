package offsetdb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// opener returns a new handle on the same underlying storage each call, so
// that the suite can close and reopen ("restart").
type opener func(t *testing.T) Store

// uniqueName returns a name no other test (or test process) uses, without '/'.
func uniqueName(t *testing.T, prefix string) string {
	t.Helper()
	n := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	if len(n) > 80 {
		n = n[len(n)-80:]
	}
	return fmt.Sprintf("%s-%s-%x", prefix, n, rand.Uint64())
}

func mustCommit(t *testing.T, s Store, offs ...Offset) {
	t.Helper()
	if err := s.Commit(context.Background(), offs); err != nil {
		t.Fatalf("commit %v: %v", offs, err)
	}
}

func mustGet(t *testing.T, s Store, g, topic string, p int) Offset {
	t.Helper()
	o, ok, err := s.Get(context.Background(), g, topic, p)
	if err != nil || !ok {
		t.Fatalf("get %s/%s/%d: ok=%v err=%v", g, topic, p, ok, err)
	}
	return o
}

// runConformance is the suite every store passes (acceptance 1).
func runConformance(t *testing.T, open opener) {
	ctx := context.Background()

	t.Run("CommitReadBack", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		g := uniqueName(t, "g")
		before := time.Now().Add(-time.Minute)
		mustCommit(t, s, Offset{Group: g, Topic: "orders", Partition: 0, Next: 42, CommittedBy: "m1"},
			Offset{Group: g, Topic: "orders", Partition: 1, Next: 7, CommittedBy: "m2"})
		o := mustGet(t, s, g, "orders", 0)
		if o.Next != 42 || o.CommittedBy != "m1" || o.Group != g || o.Topic != "orders" || o.Partition != 0 {
			t.Fatalf("read back %+v", o)
		}
		if o.CommittedAt.Before(before) || o.CommittedAt.After(time.Now().Add(time.Minute)) {
			t.Fatalf("committed_at %v is not now", o.CommittedAt)
		}
		if o := mustGet(t, s, g, "orders", 1); o.Next != 7 || o.CommittedBy != "m2" {
			t.Fatalf("read back %+v", o)
		}
		if _, ok, err := s.Get(ctx, g, "orders", 2); ok || err != nil {
			t.Fatalf("never committed partition: ok=%v err=%v", ok, err)
		}
		if _, ok, err := s.Get(ctx, g+"-none", "orders", 0); ok || err != nil {
			t.Fatalf("unknown group: ok=%v err=%v", ok, err)
		}
	})

	t.Run("NeverBackwards", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		g := uniqueName(t, "g")
		mustCommit(t, s, Offset{Group: g, Topic: "t", Partition: 0, Next: 10, CommittedBy: "fast"})
		mustCommit(t, s, Offset{Group: g, Topic: "t", Partition: 0, Next: 5, CommittedBy: "stale"})
		if o := mustGet(t, s, g, "t", 0); o.Next != 10 || o.CommittedBy != "fast" {
			t.Fatalf("after 10 then 5: %+v, want 10 by fast", o)
		}
		// Within one call, the higher wins whatever the order.
		mustCommit(t, s, Offset{Group: g, Topic: "t", Partition: 1, Next: 9},
			Offset{Group: g, Topic: "t", Partition: 1, Next: 3})
		if o := mustGet(t, s, g, "t", 1); o.Next != 9 {
			t.Fatalf("batch 9,3: %d, want 9", o.Next)
		}
		mustCommit(t, s, Offset{Group: g, Topic: "t", Partition: 0, Next: 11})
		if o := mustGet(t, s, g, "t", 0); o.Next != 11 {
			t.Fatalf("forward to 11: %d", o.Next)
		}
	})

	t.Run("ConcurrentCommitters", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		g := uniqueName(t, "g")
		const workers, each, shared = 16, 40, 3
		var mu sync.Mutex
		want := map[Key]int64{}
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), 1))
				for range each {
					// A shared partition (contended) and the worker's own one.
					o1 := Offset{Group: g, Topic: "t", Partition: r.IntN(shared), Next: r.Int64N(1_000_000), CommittedBy: fmt.Sprint(w)}
					o2 := Offset{Group: g, Topic: "own", Partition: w, Next: r.Int64N(1_000_000)}
					if err := s.Commit(ctx, []Offset{o2, o1}); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for _, o := range []Offset{o1, o2} {
						want[o.Key()] = max(want[o.Key()], o.Next)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for k, n := range want {
			if o := mustGet(t, s, k.Group, k.Topic, k.Partition); o.Next != n {
				t.Errorf("%v: stored %d, want max of commits %d", k, o.Next, n)
			}
		}
	})

	t.Run("Restart", func(t *testing.T) {
		s := open(t)
		g := uniqueName(t, "g")
		mustCommit(t, s, Offset{Group: g, Topic: "t", Partition: 3, Next: 99, CommittedBy: "before"})
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Commit(ctx, []Offset{{Group: g, Topic: "t", Partition: 3, Next: 100}}); !errors.Is(err, ErrClosed) {
			t.Fatalf("commit after close: %v, want ErrClosed", err)
		}
		s = open(t)
		defer s.Close()
		if o := mustGet(t, s, g, "t", 3); o.Next != 99 || o.CommittedBy != "before" {
			t.Fatalf("after reopen: %+v", o)
		}
		mustCommit(t, s, Offset{Group: g, Topic: "t", Partition: 3, Next: 50})
		if o := mustGet(t, s, g, "t", 3); o.Next != 99 {
			t.Fatalf("backwards after reopen: %d", o.Next)
		}
	})

	t.Run("ListGroups", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		g1, g2 := uniqueName(t, "a"), uniqueName(t, "b")
		mustCommit(t, s,
			Offset{Group: g1, Topic: "b", Partition: 1, Next: 4},
			Offset{Group: g1, Topic: "a", Partition: 10, Next: 3},
			Offset{Group: g1, Topic: "a", Partition: 2, Next: 2},
			Offset{Group: g2, Topic: "a", Partition: 0, Next: 1})
		list, err := s.List(ctx, g1)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range list {
			if o.Group != g1 || o.CommittedAt.IsZero() {
				t.Errorf("list entry %+v", o)
			}
			got = append(got, fmt.Sprintf("%s/%d=%d", o.Topic, o.Partition, o.Next))
		}
		if want := []string{"a/2=2", "a/10=3", "b/1=4"}; !slices.Equal(got, want) {
			t.Fatalf("list = %v, want %v", got, want)
		}
		groups, err := s.Groups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(groups, g1) || !slices.Contains(groups, g2) || !slices.IsSorted(groups) {
			t.Fatalf("groups %v lack %s or %s, or are not sorted", groups, g1, g2)
		}
		if list, err := s.List(ctx, g1+"-none"); err != nil || len(list) != 0 {
			t.Fatalf("list of unknown group: %v %v", list, err)
		}
	})

	t.Run("Reset", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		g := uniqueName(t, "g")
		mustCommit(t, s, Offset{Group: g, Topic: "t", Partition: 0, Next: 100})
		if err := s.Reset(ctx, g, "t", 0, 10); err != nil {
			t.Fatal(err)
		}
		if o := mustGet(t, s, g, "t", 0); o.Next != 10 || o.CommittedBy != ResetBy {
			t.Fatalf("after reset to 10: %+v", o)
		}
		mustCommit(t, s, Offset{Group: g, Topic: "t", Partition: 0, Next: 5})
		if o := mustGet(t, s, g, "t", 0); o.Next != 10 {
			t.Fatalf("commit 5 after reset to 10: %d", o.Next)
		}
		mustCommit(t, s, Offset{Group: g, Topic: "t", Partition: 0, Next: 20})
		if o := mustGet(t, s, g, "t", 0); o.Next != 20 {
			t.Fatalf("commit 20 after reset: %d", o.Next)
		}
		// Reset of a partition never committed creates it.
		if err := s.Reset(ctx, g, "t", 7, 3); err != nil {
			t.Fatal(err)
		}
		if o := mustGet(t, s, g, "t", 7); o.Next != 3 {
			t.Fatalf("reset new partition: %d", o.Next)
		}
	})

	t.Run("InvalidOffsets", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		for _, o := range []Offset{
			{Group: "", Topic: "t", Next: 1},
			{Group: "g", Topic: "", Next: 1},
			{Group: "g", Topic: "t", Partition: -1, Next: 1},
			{Group: "g", Topic: "t", Next: -1},
			{Group: "g/x", Topic: "t", Next: 1},
			{Group: strings.Repeat("g", 256), Topic: "t", Next: 1},
			{Group: "..", Topic: "t", Next: 1}, // a ZooKeeper path would resolve it away
			{Group: "g", Topic: ".", Next: 1},
		} {
			if err := s.Commit(ctx, []Offset{o}); !errors.Is(err, ErrInvalidOffset) {
				t.Errorf("commit %+v: %v, want ErrInvalidOffset", o, err)
			}
		}
		if err := s.Commit(ctx, nil); err != nil {
			t.Errorf("empty commit: %v", err)
		}
	})
}
