// Package offsetbench measures offset commits against a real database: through the offset
// store's group commit, against one autocommitted UPDATE per commit, and the database's own
// ceiling. It backs `imago bench offsets` and the offset figures; it is internal because it is
// a load generator, not something an application that stores offsets should import.
package offsetbench

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/imagomq/imago/internal/mysqlpool"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/offsetdb"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Modes of Commits.
const (
	// ModeGroupCommit commits through offsetdb.Open's Batcher.
	ModeGroupCommit = "group-commit"
	// ModeUpdatePerCommit runs one autocommitted UPDATE per commit, on a
	// pool of one connection per committer: the baseline.
	ModeUpdatePerCommit = "update-per-commit"
)

// Config configures Commits (and `imago bench offsets`).
type Config struct {
	// Store is "postgres" or "mysql"; DSN its database. Migrations are applied.
	Store string
	DSN   string
	// Mode is ModeGroupCommit or ModeUpdatePerCommit.
	Mode string
	// Committers is the number of concurrent committers. Default 64. Each
	// commits increasing offsets of its own partition, as consumers do.
	Committers int
	// Commits is the total number of commits; if 0, run for Duration.
	Commits  int
	Duration time.Duration
	// Group is the consumer group written to. Default "imago-bench-<mode>-<time>".
	Group string
	// GroupCommit configures the Batcher in ModeGroupCommit mode.
	GroupCommit offsetdb.GroupCommitConfig
}

// Result is what Commits measured.
type Result struct {
	Mode       string
	Committers int
	Commits    int
	Elapsed    time.Duration
	// PerSecond is Commits / Elapsed.
	PerSecond float64
	// Latency of one commit call, from call to return.
	P50, P99, Max time.Duration
	// Transactions is the number of database transactions that wrote the
	// commits (flushes in group-commit mode; Commits otherwise).
	Transactions uint64
}

func (r Result) String() string {
	return fmt.Sprintf("%-18s committers=%d commits=%d elapsed=%v commits/s=%.0f p50=%v p99=%v max=%v transactions=%d",
		r.Mode, r.Committers, r.Commits, r.Elapsed.Round(time.Millisecond), r.PerSecond,
		r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond), r.Transactions)
}

// BenchCommits measures offset commits per second and commit latency
// against a real database (the offset figures of docs/operations.md).
func Commits(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Committers <= 0 {
		cfg.Committers = 64
	}
	if cfg.Commits <= 0 && cfg.Duration <= 0 {
		cfg.Duration = 5 * time.Second
	}
	if cfg.Group == "" {
		cfg.Group = fmt.Sprintf("imago-bench-%s-%d", cfg.Mode, time.Now().UnixNano())
	}
	kind, ok := migrations.Dialect(cfg.Store)
	if !ok {
		return Result{}, fmt.Errorf("offsetbench: store %q is not postgres or mysql", cfg.Store)
	}
	const topic = "bench"
	// The batcher needs few connections: one flusher, plus readers.
	store, err := offsetdb.Open(ctx, offsetdb.Config{Store: kind, DSN: cfg.DSN, Migrate: true, MaxConns: 4, GroupCommit: cfg.GroupCommit})
	if err != nil {
		return Result{}, err
	}
	defer store.Close()
	seed := make([]offsetdb.Offset, cfg.Committers)
	for i := range seed {
		seed[i] = offsetdb.Offset{Group: cfg.Group, Topic: topic, Partition: i, Next: 0, CommittedBy: "bench"}
	}
	if err := store.Commit(ctx, seed); err != nil {
		return Result{}, fmt.Errorf("offsetbench: seed rows: %w", err)
	}

	var commit func(ctx context.Context, partition int, next int64) error
	var transactions func() uint64
	var done atomic.Uint64
	switch cfg.Mode {
	case ModeGroupCommit:
		before := store.Stats().Flushes
		commit = func(ctx context.Context, p int, n int64) error {
			return store.Commit(ctx, []offsetdb.Offset{{Group: cfg.Group, Topic: topic, Partition: p, Next: n, CommittedBy: "bench"}})
		}
		transactions = func() uint64 { return store.Stats().Flushes - before }
	case ModeUpdatePerCommit:
		transactions = done.Load
		if kind == migrations.Postgres {
			pool, err := openPgPool(ctx, cfg.DSN, cfg.Committers)
			if err != nil {
				return Result{}, err
			}
			defer pool.Close()
			commit = pgUpdateCommit(pool, cfg.Group, topic)
		} else {
			db, err := openMySQL(ctx, cfg.DSN, cfg.Committers)
			if err != nil {
				return Result{}, err
			}
			defer db.Close()
			commit = mysqlUpdateCommit(db, cfg.Group, topic)
		}
	default:
		return Result{}, fmt.Errorf("offsetbench: unknown mode %q", cfg.Mode)
	}

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lats     []time.Duration
		firstErr error
		budget   atomic.Int64
	)
	budget.Store(int64(cfg.Commits))
	deadline := time.Now().Add(cfg.Duration)
	start := time.Now()
	for c := range cfg.Committers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := make([]time.Duration, 0, 1024)
			var next int64
			for ctx.Err() == nil {
				if cfg.Commits > 0 {
					if budget.Add(-1) < 0 {
						break
					}
				} else if time.Now().After(deadline) {
					break
				}
				next++
				t0 := time.Now()
				if err := commit(ctx, c, next); err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
					break
				}
				mine = append(mine, time.Since(t0))
				done.Add(1)
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return Result{}, fmt.Errorf("offsetbench %s: %w", cfg.Mode, firstErr)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if len(lats) == 0 {
		return Result{}, errors.New("offsetbench: no commit completed")
	}
	slices.Sort(lats)
	q := func(f float64) time.Duration { return lats[min(len(lats)-1, int(f*float64(len(lats))))] }
	return Result{
		Mode: cfg.Mode, Committers: cfg.Committers, Commits: len(lats), Elapsed: elapsed,
		PerSecond: float64(len(lats)) / elapsed.Seconds(),
		P50:       q(0.50), P99: q(0.99), Max: lats[len(lats)-1],
		Transactions: transactions(),
	}, nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func pgUpdateCommit(pool *pgxpool.Pool, group, topic string) func(context.Context, int, int64) error {
	return func(ctx context.Context, p int, n int64) error {
		_, err := pool.Exec(ctx, `UPDATE imago.consumer_offsets
			SET next_offset = GREATEST(next_offset, $1), committed_at = now(), committed_by = $2
			WHERE group_name = $3 AND topic = $4 AND partition = $5`, n, "bench", group, topic, p)
		return err
	}
}

func mysqlUpdateCommit(db *sql.DB, group, topic string) func(context.Context, int, int64) error {
	return func(ctx context.Context, p int, n int64) error {
		_, err := db.ExecContext(ctx, "UPDATE imago_consumer_offsets "+
			"SET next_offset = GREATEST(next_offset, ?), committed_at = UTC_TIMESTAMP(6), committed_by = ? "+
			"WHERE group_name = ? AND topic = ? AND `partition` = ?", n, "bench", group, topic, p)
		return err
	}
}

// CeilingShape is one way to keep a number of offsets in flight: Flushes concurrent
// transactions of Rows offsets each, and the rate the database sustained that way.
type CeilingShape struct {
	Flushes, Rows int
	PerSecond     float64 // offsets written per second
}

// FlushCeiling measures what the database itself sustains when at most inFlight offsets
// are outstanding, the situation of inFlight synchronous committers: for each split of
// inFlight into k concurrent transactions of inFlight/k rows (k = 1, 2, 4, 8), writers call
// the store's Commit back to back with no batcher, queue or wake-up in between, for d each.
// No group commit of inFlight synchronous committers can beat the best of these rates: each
// committer has one commit outstanding, so the database never holds more than inFlight
// offsets at once, and here it gets them with zero client overhead.
func FlushCeiling(ctx context.Context, store, dsn string, inFlight int, d time.Duration) ([]CeilingShape, error) {
	kind, ok := migrations.Dialect(store)
	if !ok {
		return nil, fmt.Errorf("offsetbench: store %q is not postgres or mysql", store)
	}
	direct, err := offsetdb.OpenDirect(ctx, offsetdb.Config{Store: kind, DSN: dsn, Migrate: true, MaxConns: 8})
	if err != nil {
		return nil, err
	}
	defer direct.Close()
	group := fmt.Sprintf("imago-bench-ceiling-%d", time.Now().UnixNano())
	var out []CeilingShape
	for _, k := range []int{1, 2, 4, 8} {
		rows := inFlight / k
		if rows == 0 {
			break
		}
		var (
			wg       sync.WaitGroup
			written  atomic.Int64
			mu       sync.Mutex
			firstErr error
		)
		start := time.Now()
		for w := range k {
			wg.Add(1)
			go func() {
				defer wg.Done()
				batch := make([]offsetdb.Offset, rows)
				for n := int64(1); time.Since(start) < d && ctx.Err() == nil; n++ {
					for i := range batch {
						batch[i] = offsetdb.Offset{Group: group, Topic: "bench", Partition: w*rows + i, Next: n, CommittedBy: "bench"}
					}
					if err := direct.Commit(ctx, batch); err != nil {
						mu.Lock()
						firstErr = cmpErr(firstErr, err)
						mu.Unlock()
						return
					}
					written.Add(int64(rows))
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return nil, fmt.Errorf("offsetbench ceiling: %w", firstErr)
		}
		out = append(out, CeilingShape{Flushes: k, Rows: rows, PerSecond: float64(written.Load()) / time.Since(start).Seconds()})
	}
	return out, ctx.Err()
}

// openPgPool opens a pool of conns connections for the baseline's UPDATEs (the tables exist:
// the store opened first applied the migrations).
func openPgPool(ctx context.Context, dsn string, conns int) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// The parse error may quote the DSN, password included: do not wrap it.
		return nil, errors.New("offsetbench: postgres: cannot parse the DSN")
	}
	pc.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("offsetbench: postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("offsetbench: postgres: %w", err)
	}
	return pool, nil
}

// openMySQL opens a pool of conns connections that keep their prepared statements, as the
// offset store's do.
func openMySQL(ctx context.Context, dsn string, conns int) (*sql.DB, error) {
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		// The parse error may quote the DSN, password included: do not wrap it.
		return nil, errors.New("offsetbench: mysql: cannot parse the DSN")
	}
	mc.ParseTime = true
	mc.Loc = time.UTC
	db, err := mysqlpool.Open(mc)
	if err != nil {
		return nil, fmt.Errorf("offsetbench: mysql: %w", err)
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("offsetbench: mysql: %w", err)
	}
	return db, nil
}
