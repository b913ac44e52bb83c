package offsetbench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/offsetdb"
)

// AgainstCeiling measures group commit and the database's ceiling (see
// FlushCeiling) in alternation, in one run: rounds rounds, each running
// group commit for cfg.Duration/rounds, then each ceiling shape for a quarter
// of that, against stores kept open for the whole run. The results add up the
// rounds: commits (and rows) over the time spent in each load.
//
// Why alternate: on a machine shared with other work (builds, tests, other
// databases' clients), the load changes from second to second, and a group
// commit figure and a ceiling measured ten seconds apart differ as much by the
// load as by anything the batcher does (measured: the same build at 22% and
// at 143% of a ceiling measured after it). In slices of a second or so both see
// the same load, so their ratio is the batcher's.
func AgainstCeiling(ctx context.Context, cfg Config, rounds int) (Result, []CeilingShape, error) {
	if cfg.Committers <= 0 {
		cfg.Committers = 64
	}
	if cfg.Duration <= 0 {
		cfg.Duration = 5 * time.Second
	}
	rounds = max(rounds, 1)
	if cfg.Group == "" {
		cfg.Group = fmt.Sprintf("imago-bench-interleaved-%d", time.Now().UnixNano())
	}
	kind, ok := migrations.Dialect(cfg.Store)
	if !ok {
		return Result{}, nil, fmt.Errorf("offsetbench: store %q is not postgres or mysql", cfg.Store)
	}
	batcher, err := offsetdb.Open(ctx, offsetdb.Config{Store: kind, DSN: cfg.DSN, Migrate: true,
		MaxConns: max(4, cfg.GroupCommit.Flushers+2), GroupCommit: cfg.GroupCommit})
	if err != nil {
		return Result{}, nil, err
	}
	defer batcher.Close()
	direct, err := offsetdb.OpenDirect(ctx, offsetdb.Config{Store: kind, DSN: cfg.DSN, MaxConns: 8})
	if err != nil {
		return Result{}, nil, err
	}
	defer direct.Close()

	const gcTopic, ceilingTopic = "bench", "ceiling"
	slice := cfg.Duration / time.Duration(rounds)
	shapeSlice := max(slice/4, 50*time.Millisecond)
	next := make([]int64, cfg.Committers) // each committer's offset, rising across rounds
	var (
		lats      []time.Duration
		gcTime    time.Duration
		flushes0  = batcher.Stats().Flushes
		shapeRows = map[int]int64{}
		shapeTime = map[int]time.Duration{}
		ks        []int
	)
	for k := 1; k <= 8 && cfg.Committers/k > 0; k *= 2 {
		ks = append(ks, k)
	}
	var ceilingNext int64
	for range rounds {
		l, el, err := commitFor(ctx, cfg.Committers, slice, func(ctx context.Context, c int) error {
			next[c]++
			return batcher.Commit(ctx, []offsetdb.Offset{{Group: cfg.Group, Topic: gcTopic, Partition: c, Next: next[c], CommittedBy: "bench"}})
		})
		if err != nil {
			return Result{}, nil, fmt.Errorf("offsetbench group commit: %w", err)
		}
		lats = append(lats, l...)
		gcTime += el
		for _, k := range ks {
			rows := cfg.Committers / k
			var n atomic.Int64
			batches := make([][]offsetdb.Offset, k) // each writer's, reused: no allocation per transaction
			for w := range batches {
				batches[w] = make([]offsetdb.Offset, rows)
			}
			_, el, err := commitFor(ctx, k, shapeSlice, func(ctx context.Context, w int) error {
				v := atomic.AddInt64(&ceilingNext, 1)
				batch := batches[w]
				for i := range batch {
					batch[i] = offsetdb.Offset{Group: cfg.Group, Topic: ceilingTopic, Partition: w*rows + i, Next: v, CommittedBy: "bench"}
				}
				if err := direct.Commit(ctx, batch); err != nil {
					return err
				}
				n.Add(int64(rows))
				return nil
			})
			if err != nil {
				return Result{}, nil, fmt.Errorf("offsetbench ceiling: %w", err)
			}
			shapeRows[k] += n.Load()
			shapeTime[k] += el
		}
	}
	if len(lats) == 0 {
		return Result{}, nil, errors.New("offsetbench: no commit completed")
	}
	slices.Sort(lats)
	q := func(f float64) time.Duration { return lats[min(len(lats)-1, int(f*float64(len(lats))))] }
	res := Result{
		Mode: ModeGroupCommit, Committers: cfg.Committers, Commits: len(lats), Elapsed: gcTime,
		PerSecond: float64(len(lats)) / gcTime.Seconds(),
		P50:       q(0.50), P99: q(0.99), Max: lats[len(lats)-1],
		Transactions: batcher.Stats().Flushes - flushes0,
	}
	var shapes []CeilingShape
	for _, k := range ks {
		shapes = append(shapes, CeilingShape{Flushes: k, Rows: cfg.Committers / k, PerSecond: float64(shapeRows[k]) / shapeTime[k].Seconds()})
	}
	return res, shapes, ctx.Err()
}

// commitFor runs n workers calling fn back to back for d and returns the
// latency of every call that succeeded and the time the workers took.
func commitFor(ctx context.Context, n int, d time.Duration, fn func(ctx context.Context, worker int) error) ([]time.Duration, time.Duration, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lats     []time.Duration
		firstErr error
	)
	start := time.Now()
	deadline := start.Add(d)
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1024)
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(deadline) {
					break
				}
				if err := fn(ctx, w); err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					break
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return lats, time.Since(start), firstErr
}
