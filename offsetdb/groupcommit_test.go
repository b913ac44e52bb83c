package offsetdb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagomq/imago/internal/testenv"
)

// hammer runs 64 committers, each committing increasing offsets of its own
// partition and of one shared partition, and checks that every commit that
// returned is readable afterwards. It returns the number of commits.
func hammer(t *testing.T, s *Batcher, group string, each int) int {
	t.Helper()
	ctx := context.Background()
	const committers = 64
	var wg sync.WaitGroup
	lastOwn := make([]int64, committers)
	var sharedMax atomic.Int64
	errs := make(chan error, committers)
	for c := range committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= each; i++ {
				n := int64(i)
				shared := int64(c*each + i)
				err := s.Commit(ctx, []Offset{
					{Group: group, Topic: "own", Partition: c, Next: n, CommittedBy: fmt.Sprint(c)},
					{Group: group, Topic: "shared", Partition: 0, Next: shared},
				})
				if err != nil {
					errs <- err
					return
				}
				lastOwn[c] = n
				for cur := sharedMax.Load(); shared > cur && !sharedMax.CompareAndSwap(cur, shared); cur = sharedMax.Load() {
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for c, n := range lastOwn {
		if o := mustGet(t, s, group, "own", c); o.Next != n {
			t.Errorf("partition %d: stored %d, last returned commit %d", c, o.Next, n)
		}
	}
	if o := mustGet(t, s, group, "shared", 0); o.Next != sharedMax.Load() {
		t.Errorf("shared partition: stored %d, max committed %d", o.Next, sharedMax.Load())
	}
	return committers * each
}

func checkCoalesced(t *testing.T, st Stats, commits int) {
	t.Helper()
	t.Logf("commits=%d flushes=%d rows=%d failed=%d (%.1f commits per transaction)",
		st.Commits, st.Flushes, st.Rows, st.FailedFlushes, float64(st.Commits)/float64(max(st.Flushes, 1)))
	if st.Commits != uint64(commits) {
		t.Errorf("stats count %d commits, want %d", st.Commits, commits)
	}
	if st.Flushes == 0 || st.Flushes > uint64(commits)/4 {
		t.Errorf("%d flushes for %d commits: want far fewer transactions than commits", st.Flushes, commits)
	}
}

func TestGroupCommitFile(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), Config{Dir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := hammer(t, s, "g", 50)
	checkCoalesced(t, s.Stats(), n)
}

func TestGroupCommitMySQL(t *testing.T) {
	t.Parallel()
	s, err := Open(context.Background(), Config{Store: "mysql", DSN: testenv.MySQLDSN(t), Migrate: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := hammer(t, s, uniqueName(t, "gc"), 50)
	checkCoalesced(t, s.Stats(), n)
}

func TestGroupCommitZooKeeper(t *testing.T) {
	t.Parallel()
	servers := testenv.ZooKeeperServers(t)
	root := fmt.Sprintf("/imago-test-%x", rand.Uint64())
	t.Cleanup(func() { zkDeleteAll(t, servers, root) })
	s, err := Open(context.Background(), Config{Store: "zookeeper", ZooKeeper: servers, Root: root, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	n := hammer(t, s, "g", 20)
	checkCoalesced(t, s.Stats(), n)
}

// TestGroupCommitPostgresTransactions counts transactions on the server side
// too: the store runs in a database of its own, so that pg_stat_database's
// xact_commit for it counts only our transactions (other test packages share
// the test database at the same time).
func TestGroupCommitPostgresTransactions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	adminDSN := testenv.PostgresDSN(t)
	dbname := fmt.Sprintf("imago_gc_%x", rand.Uint32())
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+dbname+" WITH (FORCE)"); err != nil {
			t.Logf("drop %s: %v", dbname, err)
		}
		admin.Close(context.Background())
	})
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+dbname); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + dbname
	dsn := u.String()

	// Create the tables, and let the migration's sessions end.
	s, err := Open(ctx, Config{Store: "postgres", DSN: dsn, Migrate: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// A backend reports its counters to pg_stat_database when it exits, so
	// read them once every session of the store has ended and they settle.
	xacts := func() int64 {
		t.Helper()
		var last int64 = -1
		for range 50 {
			var n int64
			if err := admin.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = $1`, dbname).Scan(&n); err != nil {
				t.Fatal(err)
			}
			var sessions int
			if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, dbname).Scan(&sessions); err != nil {
				t.Fatal(err)
			}
			if sessions == 0 && n == last {
				return n
			}
			last = n
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatal("pg_stat_database did not settle")
		return 0
	}
	before := xacts()

	s, err = Open(ctx, Config{Store: "postgres", DSN: dsn, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	n := hammer(t, s, "g", 50)
	st := s.Stats()
	s.Close()
	after := xacts()
	checkCoalesced(t, st, n)
	delta := after - before
	t.Logf("pg_stat_database.xact_commit grew by %d for %d commits (%d flushes, plus the reads that check them)", delta, n, st.Flushes)
	// hammer's checks read 65 rows, one transaction each; allow a few more
	// for session start-up.
	if reads := int64(65); delta > int64(st.Flushes)+reads+10 || delta < int64(st.Flushes) {
		t.Errorf("server counted %d transactions, want flushes (%d) + reads (%d) + a few", delta, st.Flushes, reads)
	}
	if delta > int64(n)/4 {
		t.Errorf("server counted %d transactions for %d commits: not far fewer", delta, n)
	}
}

// flakyStore wraps a real store to fail one flush on purpose. A real server
// cannot be made to fail one chosen flush on demand: killing or restarting
// PostgreSQL or MariaDB would break every other test package using it at the
// same time, and a failure at the wrong moment would land in another flush.
type flakyStore struct {
	Store
	calls   atomic.Int32
	entered chan struct{} // closed when the first flush is inside Commit
	gate    chan struct{} // the first flush waits for it
	failing int32         // the call that fails
}

var errInjected = errors.New("injected flush failure")

func (f *flakyStore) Commit(ctx context.Context, offsets []Offset) error {
	switch f.calls.Add(1) {
	case 1:
		close(f.entered)
		<-f.gate
	case f.failing:
		return errInjected
	}
	return f.Store.Commit(ctx, offsets)
}

func TestGroupCommitFailureReachesEveryWaiter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	real, err := OpenFile(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	flaky := &flakyStore{Store: real, entered: make(chan struct{}), gate: make(chan struct{}), failing: 2}
	// One flusher, so that the queued commits wait for the blocked flush and
	// then form one flush together.
	b := NewBatcher(flaky, GroupCommitConfig{Flushers: 1}, quietLogger())
	defer b.Close()

	// The first commit occupies the flusher ...
	first := make(chan error, 1)
	go func() { first <- b.Commit(ctx, []Offset{{Group: "g", Topic: "t", Partition: 99, Next: 1}}) }()
	<-flaky.entered
	// ... while 20 more queue up: they will be the second flush, which fails.
	const waiters = 20
	results := make(chan error, waiters)
	for i := range waiters {
		go func() { results <- b.Commit(ctx, []Offset{{Group: "g", Topic: "t", Partition: i, Next: 5}}) }()
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		b.mu.Lock()
		n := b.queued
		b.mu.Unlock()
		if n == waiters {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d commits queued, want %d", n, waiters)
		}
		time.Sleep(time.Millisecond)
	}
	close(flaky.gate)
	if err := <-first; err != nil {
		t.Fatalf("first flush: %v", err)
	}
	for range waiters {
		if err := <-results; !errors.Is(err, errInjected) {
			t.Errorf("waiter of the failed flush got %v, want the injected cause", err)
		}
	}
	if st := b.Stats(); st.FailedFlushes != 1 || st.Flushes != 1 {
		t.Errorf("stats %+v, want 1 failed and 1 successful flush", st)
	}
	for i := range waiters {
		if _, ok, _ := b.Get(ctx, "g", "t", i); ok {
			t.Errorf("partition %d stored although its flush failed", i)
		}
	}
	// The Batcher carries on: a retry succeeds.
	if err := b.Commit(ctx, []Offset{{Group: "g", Topic: "t", Partition: 0, Next: 5}}); err != nil {
		t.Fatal(err)
	}
	if o := mustGet(t, b, "g", "t", 0); o.Next != 5 {
		t.Fatalf("after retry: %d", o.Next)
	}
}

func TestGroupCommitMaxBatchAndDelay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := OpenFile(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	b := NewBatcher(s, GroupCommitConfig{MaxBatch: 8, MaxDelay: 20 * time.Millisecond}, quietLogger())
	defer b.Close()
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Commit(ctx, []Offset{{Group: "g", Topic: "t", Partition: i, Next: 1}}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	st := b.Stats()
	t.Logf("%+v", st)
	if st.Rows != 32 || st.Flushes < 4 {
		t.Errorf("32 keys with MaxBatch 8 in %d flushes (%d rows), want >= 4 flushes of <= 8", st.Flushes, st.Rows)
	}
	// A lone commit waits about MaxDelay, not more.
	start := time.Now()
	if err := b.Commit(ctx, []Offset{{Group: "g", Topic: "t", Partition: 0, Next: 2}}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 15*time.Millisecond || d > 2*time.Second {
		t.Errorf("lone commit took %v with MaxDelay 20ms", d)
	}
	// Flush and Close drain the queue; later commits fail.
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Commit(ctx, []Offset{{Group: "g", Topic: "t", Partition: 0, Next: 3}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestCoalesce(t *testing.T) {
	got, err := Coalesce([]Offset{
		{Group: "b", Topic: "t", Partition: 0, Next: 1},
		{Group: "a", Topic: "t", Partition: 1, Next: 9, CommittedBy: "x"},
		{Group: "a", Topic: "t", Partition: 1, Next: 3},
		{Group: "a", Topic: "t", Partition: 0, Next: 2},
		{Group: "a", Topic: "t", Partition: 1, Next: 9, CommittedBy: "y"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []Offset{
		{Group: "a", Topic: "t", Partition: 0, Next: 2},
		{Group: "a", Topic: "t", Partition: 1, Next: 9, CommittedBy: "y"},
		{Group: "b", Topic: "t", Partition: 0, Next: 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Coalesce = %v, want %v", got, want)
	}
}

// gatedStore wraps a real store, holds its first flush until the gate opens
// and records the rows of every flush. Like flakyStore, it exists because a
// real server cannot be made to stall one chosen flush on demand.
type gatedStore struct {
	Store
	entered chan struct{}
	gate    chan struct{}
	opened  sync.Once
	mu      sync.Mutex
	sizes   []int
}

func (g *gatedStore) Commit(ctx context.Context, offsets []Offset) error {
	g.mu.Lock()
	g.sizes = append(g.sizes, len(offsets))
	first := len(g.sizes) == 1
	g.mu.Unlock()
	if first {
		close(g.entered)
		<-g.gate
	}
	return g.Store.Commit(ctx, offsets)
}

// open lets the held flush go on (once).
func (g *gatedStore) open() { g.opened.Do(func() { close(g.gate) }) }

// gatedBatcher is a Batcher with two flushers over a gatedStore of a file
// store; the gate opens at the latest when the test ends (before the Batcher
// closes, which waits for the held flush).
func gatedBatcher(t *testing.T) (*Batcher, *gatedStore) {
	t.Helper()
	real, err := OpenFile(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedStore{Store: real, entered: make(chan struct{}), gate: make(chan struct{})}
	b := NewBatcher(g, GroupCommitConfig{Flushers: 2}, quietLogger())
	t.Cleanup(func() { b.Close() })
	t.Cleanup(g.open) // runs first
	return b, g
}

func (g *gatedStore) flushSizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sizes)
}

// While a flush of 16 offsets runs, the second flusher does not send the
// first commits that arrive as flushes of their own: it waits until as many
// offsets are queued as the running flush carries, then sends them together.
func TestGroupCommitFlushersKeepBatchesEven(t *testing.T) {
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

	results := make(chan error, 16)
	commit := func(i int) {
		go func() { results <- b.Commit(ctx, []Offset{{Group: "g", Topic: "small", Partition: i, Next: 1}}) }()
	}
	waitQueued := func(want int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			b.mu.Lock()
			n := b.queued
			b.mu.Unlock()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d offsets queued, want %d", n, want)
			}
		}
	}
	for i := range 15 {
		commit(i)
	}
	waitQueued(15)
	if s := g.flushSizes(); len(s) != 1 {
		t.Fatalf("flushes %v while 15 of 16 offsets were queued behind a running flush of 16: want none started", s)
	}
	commit(15)
	for deadline := time.Now().Add(10 * time.Second); len(g.flushSizes()) < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second flusher did not start once 16 offsets were queued")
		}
	}
	for range 16 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if s := g.flushSizes(); len(s) != 2 || s[1] != 16 {
		t.Fatalf("flush sizes %v, want [16 16] (the second flush ran while the first was held)", s)
	}
	// A flush that finishes lets a smaller batch go: nothing waits for a count.
	for i := range 3 {
		go func() { results <- b.Commit(ctx, []Offset{{Group: "g", Topic: "late", Partition: i, Next: 1}}) }()
	}
	g.open()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
}

// Flush (and so Reset) waits for flushes already running on another flusher,
// not only for what is still queued.
func TestGroupCommitFlushWaitsForRunningFlushes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b, g := gatedBatcher(t)
	held := make(chan error, 1)
	go func() { held <- b.Commit(ctx, []Offset{{Group: "g", Topic: "t", Partition: 0, Next: 7}}) }()
	<-g.entered
	flushed := make(chan error, 1)
	go func() { flushed <- b.Flush(ctx) }()
	select {
	case err := <-flushed:
		t.Fatalf("Flush returned (%v) while a commit queued before it was still being written", err)
	case <-time.After(200 * time.Millisecond): // a negative check: nothing to wait on
	}
	g.open()
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if err := <-held; err != nil {
		t.Fatal(err)
	}
	if o := mustGet(t, b, "g", "t", 0); o.Next != 7 {
		t.Fatalf("offset %d after Flush, want 7", o.Next)
	}
}
