package offsetdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/imagomq/imago/migrations"
)

// pgUpsert writes a batch with one statement: the rows arrive as five arrays
// (one bind parameter each, whatever the batch size), in the order given
// (sorted by key, WITH ORDINALITY keeps it), and the stored offset becomes
// the greater one. A lower commit changes nothing, not even committed_at.
const pgUpsert = `
INSERT INTO imago.consumer_offsets AS o (group_name, topic, partition, next_offset, committed_at, committed_by)
SELECT u.g, u.t, u.p, u.n, now(), u.b
  FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[]) WITH ORDINALITY AS u(g, t, p, n, b, i)
 ORDER BY u.i
ON CONFLICT (group_name, topic, partition) DO UPDATE
   SET next_offset  = GREATEST(o.next_offset, EXCLUDED.next_offset),
       committed_at = EXCLUDED.committed_at,
       committed_by = EXCLUDED.committed_by
 WHERE o.next_offset <= EXCLUDED.next_offset`

const pgReset = `
INSERT INTO imago.consumer_offsets (group_name, topic, partition, next_offset, committed_at, committed_by)
VALUES ($1, $2, $3, $4, now(), $5)
ON CONFLICT (group_name, topic, partition) DO UPDATE
   SET next_offset = EXCLUDED.next_offset, committed_at = EXCLUDED.committed_at, committed_by = EXCLUDED.committed_by`

// ResetBy is the committed_by of a row written by Reset.
const ResetBy = "imago groups reset"

// PostgresStore keeps offsets in imago.consumer_offsets through a pgx pool.
type PostgresStore struct {
	closeGuard
	pool *pgxpool.Pool
	log  *slog.Logger
}

// OpenPostgres connects to cfg.DSN (applying migrations if cfg.Migrate).
func OpenPostgres(ctx context.Context, cfg Config) (*PostgresStore, error) {
	pool, err := newPgPool(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &PostgresStore{pool: pool, log: cfg.logger()}, nil
}

func newPgPool(ctx context.Context, cfg Config) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// The parse error may quote the DSN, password included: do not wrap it.
		return nil, errors.New("offsetdb: postgres: cannot parse the DSN")
	}
	pc.MaxConns = int32(cfg.maxConns())
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("offsetdb: postgres: connect to %s: %w", pgWhere(pc.ConnConfig), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("offsetdb: postgres: connect to %s: %w", pgWhere(pc.ConnConfig), err)
	}
	if cfg.Migrate {
		db := stdlib.OpenDBFromPool(pool)
		err := migrations.Apply(ctx, db, migrations.Postgres)
		db.Close()
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("offsetdb: postgres: %w", err)
		}
	}
	return pool, nil
}

// pgWhere names a server for logs and errors, without the password.
func pgWhere(c *pgx.ConnConfig) string {
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// Pool returns the store's connection pool (for the same database's other
// tables, e.g. transactional consume); do not close it.
func (s *PostgresStore) Pool() *pgxpool.Pool { return s.pool }

// Commit writes the offsets in one transaction with one upsert, retrying a
// deadlock or serialization failure.
func (s *PostgresStore) Commit(ctx context.Context, offsets []Offset) error {
	if err := s.check(); err != nil {
		return err
	}
	rows, err := Coalesce(offsets)
	if err != nil {
		return err
	}
	return s.commitSorted(ctx, rows)
}

// commitSorted writes rows as Coalesce returns them (the Batcher's flush
// prepared them so: no second pass).
func (s *PostgresStore) commitSorted(ctx context.Context, rows []Offset) error {
	if err := s.check(); err != nil {
		return err
	}
	if len(rows) == 0 {
		return nil
	}
	a := getUpsertArgs()
	defer a.release()
	args := a.pg(rows)
	return retryConflict(ctx, func() error {
		return s.onLiveConn(ctx, func() error {
			_, err := s.pool.Exec(ctx, pgUpsert, args...)
			return err
		})
	}, isPgConflict)
}

// onLiveConn runs fn, and once more, on new connections, when fn failed because its
// connection had ended (pgConnLost). pgxpool hands out a connection idle for less than a
// second without checking it, so after the server restarted, or ended the sessions
// (pg_terminate_backend, a failover), each pooled connection failed one flush, and every
// commit in it (and a read), while the database was up again. The pool is reset (the other pooled
// connections are as dead) before the second try. fn must be idempotent: it may run twice
// when the first run's outcome is unknown (the upsert only moves offsets forward).
func (s *PostgresStore) onLiveConn(ctx context.Context, fn func() error) error {
	err := fn()
	if err == nil || ctx.Err() != nil || !pgConnLost(err) {
		return err
	}
	s.log.Warn("offsetdb: postgres connection lost; retrying on a new connection", "err", err)
	s.pool.Reset()
	if err := fn(); err != nil {
		return fmt.Errorf("offsetdb: postgres: after a lost connection: %w", err)
	}
	return nil
}

// pgConnLost reports whether err ended the statement's connection rather than the statement:
// a network error (the server gone, a reset), or the FATAL error of a session the server ended
// (57P01 admin_shutdown: pg_terminate_backend or a shutdown; 57P02 crash_shutdown).
func pgConnLost(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "57P01" || pe.Code == "57P02"
	}
	return !errors.Is(err, pgx.ErrNoRows) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err)
}

// pgArrays returns the five arrays of pgUpsert for rows, newly allocated.
func pgArrays(rows []Offset) []any {
	return new(upsertArgs).pg(rows)
}

// CommitPgxTx writes offsets inside the caller's transaction (transactional
// consume: the handler's side effects and the offset commit together). Same
// statement and rules as PostgresStore.Commit.
func CommitPgxTx(ctx context.Context, tx pgx.Tx, offsets []Offset) error {
	rows, err := Coalesce(offsets)
	if err != nil || len(rows) == 0 {
		return err
	}
	if _, err := tx.Exec(ctx, pgUpsert, pgArrays(rows)...); err != nil {
		return fmt.Errorf("offsetdb: commit %d offsets in transaction: %w", len(rows), err)
	}
	return nil
}

func isPgConflict(err error) bool {
	var pe *pgconn.PgError
	// 40001 serialization_failure, 40P01 deadlock_detected.
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// retryConflict runs fn, again after a short pause while it fails with an
// error conflict() accepts (deadlock, lock wait), at most 5 times.
func retryConflict(ctx context.Context, fn func() error, conflict func(error) bool) error {
	var err error
	for attempt := range 5 {
		if err = fn(); err == nil || !conflict(err) {
			return err
		}
		select {
		case <-time.After(time.Duration(attempt+1) * time.Millisecond):
		case <-ctx.Done():
			return err
		}
	}
	return err
}

// Get returns one partition's offset.
func (s *PostgresStore) Get(ctx context.Context, group, topic string, partition int) (Offset, bool, error) {
	if err := s.check(); err != nil {
		return Offset{}, false, err
	}
	o := Offset{Group: group, Topic: topic, Partition: partition}
	err := s.onLiveConn(ctx, func() error {
		return s.pool.QueryRow(ctx, `SELECT next_offset, committed_at, committed_by FROM imago.consumer_offsets
		WHERE group_name = $1 AND topic = $2 AND partition = $3`, group, topic, partition).
			Scan(&o.Next, &o.CommittedAt, &o.CommittedBy)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Offset{}, false, nil
	}
	if err != nil {
		return Offset{}, false, fmt.Errorf("offsetdb: get %s/%s/%d: %w", group, topic, partition, err)
	}
	o.CommittedAt = o.CommittedAt.UTC()
	return o, true, nil
}

// List returns a group's offsets.
func (s *PostgresStore) List(ctx context.Context, group string) ([]Offset, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var out []Offset
	err := s.onLiveConn(ctx, func() error {
		rows, err := s.pool.Query(ctx, `SELECT topic, partition, next_offset, committed_at, committed_by
		FROM imago.consumer_offsets WHERE group_name = $1 ORDER BY topic COLLATE "C", partition`, group)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Offset, error) {
			o := Offset{Group: group}
			err := r.Scan(&o.Topic, &o.Partition, &o.Next, &o.CommittedAt, &o.CommittedBy)
			o.CommittedAt = o.CommittedAt.UTC()
			return o, err
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("offsetdb: list %s: %w", group, err)
	}
	return out, nil
}

// Groups returns the groups with offsets.
func (s *PostgresStore) Groups(ctx context.Context) ([]string, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	var out []string
	err := s.onLiveConn(ctx, func() error {
		rows, err := s.pool.Query(ctx, `SELECT group_name FROM imago.consumer_offsets GROUP BY group_name ORDER BY group_name COLLATE "C"`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("offsetdb: groups: %w", err)
	}
	return out, nil
}

// Reset sets an offset, backwards included.
func (s *PostgresStore) Reset(ctx context.Context, group, topic string, partition int, next int64) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := validate(Offset{Group: group, Topic: topic, Partition: partition, Next: next}); err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, pgReset, group, topic, partition, next, ResetBy); err != nil {
		return fmt.Errorf("offsetdb: reset %s/%s/%d to %d: %w", group, topic, partition, next, err)
	}
	s.log.Info("offset reset", "group", group, "topic", topic, "partition", partition, "offset", next)
	return nil
}

// Ping reports whether the database answers now (for /readyz), within ctx and sqlPingTimeout,
// on a live connection (a pooled one the server ended is replaced, as for a commit).
func (s *PostgresStore) Ping(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, sqlPingTimeout)
	defer cancel()
	if err := s.onLiveConn(ctx, func() error { return s.pool.Ping(ctx) }); err != nil {
		return fmt.Errorf("offsetdb: postgres: ping: %w", err)
	}
	return nil
}

// Close closes the pool.
func (s *PostgresStore) Close() error {
	if !s.close() {
		return nil
	}
	s.pool.Close()
	return nil
}

// Execer is the part of *sql.Tx (and *sql.DB, *sql.Conn) that CommitTx uses.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}
