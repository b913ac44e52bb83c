package offsetdb

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// GroupCommitConfig tunes the Batcher. The zero value is the recommended
// setting: natural batching, 512 keys per flush.
type GroupCommitConfig struct {
	// MaxBatch bounds the offsets (before coalescing to one per key) taken
	// into one flush. A Commit call is never split, so a single call with
	// more offsets is flushed alone. Default 512.
	MaxBatch int
	// MaxDelay is how long a flush waits for more commits after the first one
	// arrives, unless MaxBatch offsets are already waiting. Default 0: flush as
	// soon as the previous flush finished. While a flush runs (a database
	// round trip and commit, ~0.5-2 ms) new commits queue up and form the next
	// batch, so batches grow with load without adding latency when idle;
	// measured, a delay only adds latency (see README figures).
	MaxDelay time.Duration
	// FlushTimeout bounds one flush (database transaction). Default 10s.
	FlushTimeout time.Duration
	// Flushers is the number of flushes that may run at once, each on its
	// own connection, each taking what is queued when it starts. Default 2:
	// while one flush waits for the database's commit, the next batch is
	// already on its way. Keys are sorted in every flush, so concurrent
	// flushes touching the same rows wait for each other but cannot
	// deadlock, and GREATEST keeps the result right in any commit order.
	Flushers int
	// Regather bounds how long a flush that would start while no other runs
	// waits for the commits the last flush released to come back. A consumer
	// commits again soon after its commit returns, so a flush that starts with
	// the first of them to return carries one commit, and the rest follow as a
	// second transaction: the database then pays two commits (two WAL flushes)
	// for the same offsets. The wait is also at most half the last
	// flush's duration, and it ends as soon as every released commit is back
	// (or MaxBatch offsets are queued). Default 1ms; negative: no wait.
	Regather time.Duration
}

func (c GroupCommitConfig) withDefaults() GroupCommitConfig {
	if c.MaxBatch <= 0 {
		c.MaxBatch = 512
	}
	if c.FlushTimeout <= 0 {
		c.FlushTimeout = 10 * time.Second
	}
	if c.Flushers <= 0 {
		c.Flushers = 2
	}
	if c.Regather == 0 {
		c.Regather = time.Millisecond
	}
	return c
}

// Stats counts a Batcher's work since it was created, for tests and metrics.
type Stats struct {
	// Commits is the number of Commit calls accepted (each holds one or
	// more offsets).
	Commits uint64
	// Flushes is the number of successful flushes: one database transaction
	// (or file fsync, or ZooKeeper multi) each.
	Flushes uint64
	// FailedFlushes is the number of flushes that returned an error.
	FailedFlushes uint64
	// Rows is the number of offsets written by successful flushes, after
	// coalescing to one per key.
	Rows uint64
}

// Batcher is the group commit in front of a Store: see the package comment.
// It implements Store; Get, List, Groups read the underlying store directly.
type Batcher struct {
	store Store
	write func(context.Context, []Offset) error // writes a coalesced, sorted batch
	cfg   GroupCommitConfig
	log   *slog.Logger

	mu      sync.Mutex
	queue   []*flushBatch // FIFO; commits join the last one while it has room
	queued  int           // offsets in queue
	waiting int           // commits in queue
	// regather is how many commits the next flush waits for when no flush
	// runs: those the last flush released plus those queued then, until
	// regatherBy at the latest (0: no wait). See startable.
	regather   int
	regatherBy time.Time
	running    map[*flushBatch]bool // batches being written now
	inflight   int                  // rows of the running batches
	idle       int                  // flushers waiting in next
	sizeHint   int                  // offsets of the last batch taken: the next one's capacity
	closed     bool

	// wake (capacity 1) tells an idle flusher that a batch may start. It is
	// sent only when one can (see startable), not on every commit: a flush
	// of n commits wakes a flusher once, not n times.
	wake chan struct{}
	stop chan struct{} // closed by Close
	done chan struct{} // closed when every flusher returned

	commits, flushes, failed, rows atomic.Uint64
	wakeups                        atomic.Uint64 // a flusher woke from wake (tests)
}

// sortedWriter is implemented by the stores that can take a batch exactly as
// the flush prepared it (validated, coalesced, sorted), without a second pass.
type sortedWriter interface {
	commitSorted(ctx context.Context, rows []Offset) error
}

// flushBatch is the unit of group commit: the offsets of the commits that
// joined it, written by one flush. Its waiters share one channel, closed when
// the flush is over, so a flush wakes its commits with one close instead of a
// send per commit.
type flushBatch struct {
	offsets []Offset // as committed (coalesced when the flush takes the batch)
	commits int
	at      time.Time     // when the first commit joined (MaxDelay only)
	done    chan struct{} // closed after err is set
	err     error
}

// NewBatcher starts group commit in front of store; the Batcher owns store
// and closes it on Close. log may be nil.
func NewBatcher(store Store, cfg GroupCommitConfig, log *slog.Logger) *Batcher {
	if log == nil {
		log = slog.Default()
	}
	b := &Batcher{
		store:   store,
		write:   store.Commit,
		cfg:     cfg.withDefaults(),
		log:     log,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		running: make(map[*flushBatch]bool),
		done:    make(chan struct{}),
	}
	if w, ok := store.(sortedWriter); ok {
		b.write = w.commitSorted
	}
	var wg sync.WaitGroup
	for range b.cfg.Flushers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.run()
		}()
	}
	go func() {
		wg.Wait()
		close(b.done)
	}()
	return b
}

// Commit queues the offsets for the next flush and waits for it. It returns
// nil only once a flush holding the offsets succeeded, or the flush's error.
// If ctx ends first Commit returns ctx.Err(); the offsets may still be
// written later (harmless: offsets never move backwards).
func (b *Batcher) Commit(ctx context.Context, offsets []Offset) error {
	for _, o := range offsets {
		if err := validate(o); err != nil {
			return err
		}
	}
	if len(offsets) == 0 {
		return nil
	}
	fb, err := b.enqueue(offsets)
	if err != nil {
		return err
	}
	b.commits.Add(1)
	if ctx.Done() == nil { // cannot be canceled: a plain receive is cheaper than a select
		<-fb.done
		return fb.err
	}
	select {
	case <-fb.done:
		return fb.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Flush waits until every commit queued before the call has been flushed
// (queued or being written), and returns the first error among those flushes.
func (b *Batcher) Flush(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	pending := slices.Clone(b.queue)
	for fb := range b.running {
		pending = append(pending, fb)
	}
	b.mu.Unlock()
	var first error
	for _, fb := range pending {
		select {
		case <-fb.done:
			if first == nil {
				first = fb.err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return first
}

// enqueue copies offsets into the last queued batch, or a new one if that
// one is full (MaxBatch offsets; a single larger commit gets a batch alone).
func (b *Batcher) enqueue(offsets []Offset) (*flushBatch, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	var fb *flushBatch
	if n := len(b.queue); n > 0 && len(b.queue[n-1].offsets)+len(offsets) <= b.cfg.MaxBatch {
		fb = b.queue[n-1]
	} else {
		fb = &flushBatch{
			offsets: make([]Offset, 0, max(len(offsets), min(b.sizeHint, b.cfg.MaxBatch))),
			done:    make(chan struct{}),
		}
		if b.cfg.MaxDelay > 0 {
			fb.at = time.Now() // only next reads it
		}
		b.queue = append(b.queue, fb)
	}
	fb.offsets = append(fb.offsets, offsets...)
	fb.commits++
	b.queued += len(offsets)
	b.waiting++
	// With MaxDelay an idle flusher keeps a timer for the oldest commit and
	// counts toward MaxBatch, so it hears of every commit; without, only of
	// the one that lets a flush start.
	signal := b.idle > 0 && (b.cfg.MaxDelay > 0 || b.startable())
	b.mu.Unlock()
	if signal {
		b.signal()
	}
	return fb, nil
}

// signal wakes an idle flusher, unless a wake-up is already pending.
func (b *Batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Get reads the underlying store. A commit that returned is visible.
func (b *Batcher) Get(ctx context.Context, group, topic string, partition int) (Offset, bool, error) {
	return b.store.Get(ctx, group, topic, partition)
}

// List reads the underlying store.
func (b *Batcher) List(ctx context.Context, group string) ([]Offset, error) {
	return b.store.List(ctx, group)
}

// Groups reads the underlying store.
func (b *Batcher) Groups(ctx context.Context) ([]string, error) {
	return b.store.Groups(ctx)
}

// Reset flushes every commit queued before it, then sets the offset (see
// Store.Reset).
func (b *Batcher) Reset(ctx context.Context, group, topic string, partition int, next int64) error {
	if err := validate(Offset{Group: group, Topic: topic, Partition: partition, Next: next}); err != nil {
		return err
	}
	if err := b.Flush(ctx); err != nil {
		return fmt.Errorf("offsetdb: reset %s/%s/%d: flush queued commits: %w", group, topic, partition, err)
	}
	return b.store.Reset(ctx, group, topic, partition, next)
}

// Err is the error after which the store refuses every commit until it is reopened, for a
// store that can tell (the file store after a failed write or fsync), or nil.
func (b *Batcher) Err() error {
	if f, ok := b.store.(interface{ Err() error }); ok {
		return f.Err()
	}
	return nil
}

// Ping reports whether the store can be reached now, for stores that can tell without a
// write (ZooKeeper); nil for the others.
func (b *Batcher) Ping(ctx context.Context) error {
	if p, ok := b.store.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	return nil
}

// Stats returns the counters.
func (b *Batcher) Stats() Stats {
	return Stats{
		Commits:       b.commits.Load(),
		Flushes:       b.flushes.Load(),
		FailedFlushes: b.failed.Load(),
		Rows:          b.rows.Load(),
	}
}

// Close flushes what is queued, stops the flusher and closes the store.
// Commits after Close fail with ErrClosed.
func (b *Batcher) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	b.mu.Unlock()
	close(b.stop)
	<-b.done
	return b.store.Close()
}

// run is a flusher goroutine, owned by the Batcher and stopped by Close.
func (b *Batcher) run() {
	for {
		fb, rows, ok := b.next()
		if !ok {
			return
		}
		b.flush(fb, rows)
	}
}

// flush writes one batch and reports the outcome to its commits.
func (b *Batcher) flush(fb *flushBatch, rows []Offset) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.FlushTimeout)
	start := time.Now()
	err := b.write(ctx, rows)
	cancel()
	if err != nil {
		b.failed.Add(1)
		err = fmt.Errorf("offsetdb: group commit of %d offsets for %d commits: %w", len(rows), fb.commits, err)
		b.log.Warn("offset flush failed", "rows", len(rows), "commits", fb.commits,
			"duration", time.Since(start), "err", err)
	} else {
		b.flushes.Add(1)
		b.rows.Add(uint64(len(rows)))
	}
	// Wake the commits outside the lock (a close readies every waiting
	// goroutine), and before the batch leaves running, so that Flush, which
	// collects running batches under the lock, never misses an unfinished one.
	fb.err = err
	close(fb.done)
	b.mu.Lock()
	delete(b.running, fb)
	b.inflight -= len(rows)
	if len(b.running) == 0 && b.cfg.Regather > 0 {
		// The commits released now, and those queued, make the next flush.
		b.regather = b.waiting + fb.commits
		b.regatherBy = time.Now().Add(min(time.Since(start)/2, b.cfg.Regather))
	}
	b.mu.Unlock()
	// No signal: this flusher goes on to next itself, and whether a batch may
	// start is one condition for every flusher.
}

// startable reports whether a flusher may take the oldest batch now (b.mu
// held). With no flush running, at once, unless the last flush just released
// commits that have not come back yet (regather; next bounds that wait): no
// timer and no added latency when idle. While flushes run, only once the queue holds at least as many
// offsets as a running flush carries on average: under a steady load of N
// committers and k flushers the flushes then settle at about N/k rows each,
// instead of splitting the committers into ever smaller flushes, each costing
// a round trip and a commit. The wait ends at the latest when the running
// flushes finish; a flusher that finishes is one that is free to go.
func (b *Batcher) startable() bool {
	if len(b.queue) == 0 {
		return false
	}
	n := len(b.running)
	if n == 0 {
		return b.waiting >= b.regather || b.queued >= b.cfg.MaxBatch
	}
	return b.queued*n >= b.inflight
}

// next waits until a batch may start (startable; right after a flush, until
// the commits it released are back or regatherBy passed; with MaxDelay until
// MaxBatch offsets wait or the oldest commit waited MaxDelay), takes it from
// the queue and returns it with its rows; false once the Batcher is closed
// and drained. After Close it takes what is left without waiting for a turn.
func (b *Batcher) next() (*flushBatch, []Offset, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		if b.closed {
			if len(b.queue) == 0 {
				return nil, nil, false
			}
			fb, rows := b.take()
			return fb, rows, true
		}
		var timer *time.Timer
		var timeout <-chan time.Time
		if b.regather > 0 && !time.Now().Before(b.regatherBy) {
			b.regather = 0
		}
		if b.regather > 0 && len(b.running) == 0 && !b.startable() {
			timer = time.NewTimer(time.Until(b.regatherBy))
			timeout = timer.C
		} else if b.startable() {
			if b.cfg.MaxDelay <= 0 || b.queued >= b.cfg.MaxBatch {
				fb, rows := b.take()
				return fb, rows, true
			}
			wait := time.Until(b.queue[0].at.Add(b.cfg.MaxDelay))
			if wait <= 0 {
				fb, rows := b.take()
				return fb, rows, true
			}
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		b.idle++
		b.mu.Unlock()
		select {
		case <-b.wake:
			b.wakeups.Add(1)
		case <-timeout:
		case <-b.stop:
		}
		if timer != nil {
			timer.Stop()
		}
		b.mu.Lock()
		b.idle--
	}
}

// take removes the oldest batch from the queue (b.mu held) and returns it
// with the rows to write: the highest offset per key, sorted by key (so
// concurrent flushes lock rows in one order).
func (b *Batcher) take() (*flushBatch, []Offset) {
	fb := b.queue[0]
	b.queue[0] = nil
	b.queue = b.queue[1:]
	if len(b.queue) == 0 {
		b.queue = nil
	}
	b.queued -= len(fb.offsets)
	b.waiting -= fb.commits
	b.regather = 0
	b.sizeHint = len(fb.offsets)
	// Every offset was validated by Commit.
	rows := coalesceValid(fb.offsets)
	b.running[fb] = true
	b.inflight += len(rows)
	// Another batch may be ready too (a commit larger than MaxBatch allows
	// behind this one): pass the turn on.
	if b.idle > 0 && b.startable() {
		b.signal()
	}
	return fb, rows
}
