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
	cfg   GroupCommitConfig
	log   *slog.Logger

	mu       sync.Mutex
	queue    []*flushBatch        // FIFO; commits join the last one while it has room
	queued   int                  // offsets in queue
	running  map[*flushBatch]bool // batches being written now
	inflight int                  // rows of the running batches
	closed   bool

	wake chan struct{} // capacity 1: "the queue changed"
	stop chan struct{} // closed by Close
	done chan struct{} // closed when every flusher returned

	commits, flushes, failed, rows atomic.Uint64
	wakeups                        atomic.Uint64 // a flusher woke from wake (tests)
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
		cfg:     cfg.withDefaults(),
		log:     log,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		running: make(map[*flushBatch]bool),
		done:    make(chan struct{}),
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
		fb = &flushBatch{done: make(chan struct{})}
		if b.cfg.MaxDelay > 0 {
			fb.at = time.Now() // only waitForBatch reads it
		}
		b.queue = append(b.queue, fb)
	}
	fb.offsets = append(fb.offsets, offsets...)
	fb.commits++
	b.queued += len(offsets)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return fb, nil
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
		select {
		case <-b.wake:
			b.wakeups.Add(1)
		case <-b.stop:
			// Closed: nothing can be queued any more; flush what is left.
			for b.flushOnce(false) {
			}
			return
		}
		for b.flushOnce(true) {
		}
	}
}

// flushOnce takes one batch from the queue and writes it; it reports whether
// it found anything. With mayWait it honours MaxDelay and waitTurn.
func (b *Batcher) flushOnce(mayWait bool) bool {
	if mayWait && b.cfg.MaxDelay > 0 {
		b.waitForBatch()
	}
	if mayWait && b.cfg.Flushers > 1 {
		b.waitTurn()
	}
	fb, rows := b.take()
	if fb == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.FlushTimeout)
	start := time.Now()
	err := b.store.Commit(ctx, rows)
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
	b.mu.Lock()
	fb.err = err
	close(fb.done)
	delete(b.running, fb)
	b.inflight -= len(rows)
	b.mu.Unlock()
	// A flusher may be waiting for this one to finish (waitTurn).
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return true
}

// waitForBatch waits until MaxBatch offsets are queued or MaxDelay passed
// since the oldest queued commit, or the Batcher is closing.
func (b *Batcher) waitForBatch() {
	for {
		b.mu.Lock()
		n := b.queued
		var oldest time.Time
		if len(b.queue) > 0 {
			oldest = b.queue[0].at
		}
		b.mu.Unlock()
		if n == 0 && oldest.IsZero() {
			return
		}
		wait := time.Until(oldest.Add(b.cfg.MaxDelay))
		if n >= b.cfg.MaxBatch || wait <= 0 {
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-b.wake:
			b.wakeups.Add(1)
		case <-t.C:
		case <-b.stop:
		}
		t.Stop()
	}
}

// waitTurn keeps batches even when several flushers run: a flush starts while another is
// running only once at least as many offsets are queued as that one carries. Under a steady
// load of N committers two flushers then alternate with N/2 rows each, instead of splitting
// the committers into ever smaller flushes (each costing a database round trip and commit);
// the wait ends at the latest when the running flush finishes, and without concurrent load
// there is no wait at all.
func (b *Batcher) waitTurn() {
	for {
		b.mu.Lock()
		empty, ready := len(b.queue) == 0, b.inflight == 0 || b.queued >= b.inflight
		b.mu.Unlock()
		if empty || ready {
			return
		}
		select {
		case <-b.wake:
			b.wakeups.Add(1)
		case <-b.stop:
			return
		}
	}
}

// take removes the oldest batch from the queue and returns it with the rows
// to write: the highest offset per key, sorted by key (so concurrent flushes
// lock rows in one order).
func (b *Batcher) take() (*flushBatch, []Offset) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		return nil, nil
	}
	fb := b.queue[0]
	b.queue[0] = nil
	b.queue = b.queue[1:]
	if len(b.queue) == 0 {
		b.queue = nil
	}
	b.queued -= len(fb.offsets)
	// Every offset was validated by Commit, so this cannot fail.
	rows, _ := Coalesce(fb.offsets)
	b.running[fb] = true
	b.inflight += len(rows)
	return fb, rows
}
