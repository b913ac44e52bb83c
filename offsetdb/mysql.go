package offsetdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/imagomq/imago/internal/mysqlpool"
	"github.com/imagomq/imago/migrations"
)

// mysqlRowsPerStatement keeps one statement under the server's 65535 bind
// parameters (5 per row). A larger batch is split into several statements of
// one transaction.
const mysqlRowsPerStatement = 8192

// mysqlUpsertTail makes the stored offset the greater one. MySQL evaluates
// the assignments left to right, so next_offset is assigned last: the
// conditions read the old value. A lower commit changes nothing.
const mysqlUpsertTail = `
ON DUPLICATE KEY UPDATE
  committed_at = IF(VALUES(next_offset) >= next_offset, VALUES(committed_at), committed_at),
  committed_by = IF(VALUES(next_offset) >= next_offset, VALUES(committed_by), committed_by),
  next_offset  = GREATEST(next_offset, VALUES(next_offset))`

// MySQLStore keeps offsets in imago_consumer_offsets (MySQL or MariaDB).
type MySQLStore struct {
	closeGuard
	db  *sql.DB
	log *slog.Logger
}

// OpenMySQL connects to cfg.DSN (applying migrations if cfg.Migrate).
func OpenMySQL(ctx context.Context, cfg Config) (*MySQLStore, error) {
	db, err := newMySQLDB(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &MySQLStore{db: db, log: cfg.logger()}, nil
}

func newMySQLDB(ctx context.Context, cfg Config) (*sql.DB, error) {
	mc, err := mysql.ParseDSN(cfg.DSN)
	if err != nil {
		// The parse error may quote the DSN, password included: do not wrap it.
		return nil, errors.New("offsetdb: mysql: cannot parse the DSN")
	}
	mc.ParseTime = true
	mc.Loc = time.UTC
	where := fmt.Sprintf("%s@%s/%s", mc.User, mc.Addr, mc.DBName)
	// Connections keep their prepared statements: a flush is one round trip, not a
	// prepare, an execute and a close (see mysqlUpsert for the statement sizes).
	db, err := mysqlpool.Open(mc)
	if err != nil {
		return nil, fmt.Errorf("offsetdb: mysql: %s: %w", where, err)
	}
	db.SetMaxOpenConns(cfg.maxConns())
	db.SetMaxIdleConns(cfg.maxConns())
	db.SetConnMaxLifetime(time.Hour)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("offsetdb: mysql: connect to %s: %w", where, err)
	}
	if cfg.Migrate {
		if err := migrations.Apply(ctx, db, migrations.MySQL); err != nil {
			db.Close()
			return nil, fmt.Errorf("offsetdb: mysql: %w", err)
		}
	}
	return db, nil
}

// DB returns the store's database handle; do not close it.
func (s *MySQLStore) DB() *sql.DB { return s.db }

// Commit writes the offsets in one transaction: one multi-row upsert (more
// than one statement only past 8192 keys), rows in key order, retried on
// deadlock or lock wait timeout.
func (s *MySQLStore) Commit(ctx context.Context, offsets []Offset) error {
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
func (s *MySQLStore) commitSorted(ctx context.Context, rows []Offset) error {
	if err := s.check(); err != nil {
		return err
	}
	if len(rows) == 0 {
		return nil
	}
	return retryConflict(ctx, func() error {
		if len(rows) <= mysqlRowsPerStatement {
			// A single statement in autocommit mode is one transaction,
			// without the round trips of BEGIN and COMMIT.
			return mysqlUpsert(ctx, s.db, rows)
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if err := mysqlUpsert(ctx, tx, rows); err != nil {
			_ = tx.Rollback()
			return err
		}
		return tx.Commit()
	}, isMySQLConflict)
}

// mysqlUpsert writes sorted, coalesced rows with as few statements as the
// bind parameter limit allows. A statement has a power-of-two number of rows
// (the last row repeated to fill it: the repeat updates its row to the values
// it already has), so a connection that keeps prepared statements reuses at
// most 14 texts, whatever the batch sizes.
func mysqlUpsert(ctx context.Context, ex Execer, rows []Offset) error {
	a := getUpsertArgs()
	defer a.release()
	for len(rows) > 0 {
		chunk := rows[:min(len(rows), mysqlUpsertStmt.MaxRows())]
		rows = rows[len(chunk):]
		size := mysqlUpsertStmt.RowsFor(len(chunk))
		args := a.mysql(chunk, size)
		if _, err := ex.ExecContext(ctx, mysqlUpsertStmt.Text(size), args...); err != nil {
			return fmt.Errorf("offsetdb: upsert %d offsets: %w", len(chunk), err)
		}
	}
	return nil
}

// mysqlUpsertStmt is the offsets upsert for 1, 2, 4 ... mysqlRowsPerStatement rows.
var mysqlUpsertStmt = mysqlpool.NewMultiRow(
	"INSERT INTO imago_consumer_offsets (group_name, topic, `partition`, next_offset, committed_at, committed_by) VALUES ",
	"(?,?,?,?,UTC_TIMESTAMP(6),?)", mysqlUpsertTail, mysqlRowsPerStatement)

func isMySQLConflict(err error) bool {
	var me *mysql.MySQLError
	// 1213 ER_LOCK_DEADLOCK, 1205 ER_LOCK_WAIT_TIMEOUT.
	return errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205)
}

// Get returns one partition's offset.
func (s *MySQLStore) Get(ctx context.Context, group, topic string, partition int) (Offset, bool, error) {
	if err := s.check(); err != nil {
		return Offset{}, false, err
	}
	o := Offset{Group: group, Topic: topic, Partition: partition}
	err := s.db.QueryRowContext(ctx, "SELECT next_offset, committed_at, committed_by FROM imago_consumer_offsets "+
		"WHERE group_name = ? AND topic = ? AND `partition` = ?", group, topic, partition).
		Scan(&o.Next, &o.CommittedAt, &o.CommittedBy)
	if errors.Is(err, sql.ErrNoRows) {
		return Offset{}, false, nil
	}
	if err != nil {
		return Offset{}, false, fmt.Errorf("offsetdb: get %s/%s/%d: %w", group, topic, partition, err)
	}
	return o, true, nil
}

// List returns a group's offsets.
func (s *MySQLStore) List(ctx context.Context, group string) ([]Offset, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, "SELECT topic, `partition`, next_offset, committed_at, committed_by "+
		"FROM imago_consumer_offsets WHERE group_name = ? ORDER BY topic, `partition`", group)
	if err != nil {
		return nil, fmt.Errorf("offsetdb: list %s: %w", group, err)
	}
	defer rows.Close()
	var out []Offset
	for rows.Next() {
		o := Offset{Group: group}
		if err := rows.Scan(&o.Topic, &o.Partition, &o.Next, &o.CommittedAt, &o.CommittedBy); err != nil {
			return nil, fmt.Errorf("offsetdb: list %s: %w", group, err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("offsetdb: list %s: %w", group, err)
	}
	return out, nil
}

// Groups returns the groups with offsets.
func (s *MySQLStore) Groups(ctx context.Context) ([]string, error) {
	if err := s.check(); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, "SELECT DISTINCT group_name FROM imago_consumer_offsets ORDER BY group_name")
	if err != nil {
		return nil, fmt.Errorf("offsetdb: groups: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return nil, fmt.Errorf("offsetdb: groups: %w", err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("offsetdb: groups: %w", err)
	}
	return out, nil
}

// Reset sets an offset, backwards included.
func (s *MySQLStore) Reset(ctx context.Context, group, topic string, partition int, next int64) error {
	if err := s.check(); err != nil {
		return err
	}
	if err := validate(Offset{Group: group, Topic: topic, Partition: partition, Next: next}); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, "INSERT INTO imago_consumer_offsets (group_name, topic, `partition`, next_offset, committed_at, committed_by) "+
		"VALUES (?,?,?,?,UTC_TIMESTAMP(6),?) ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset), "+
		"committed_at = VALUES(committed_at), committed_by = VALUES(committed_by)",
		group, topic, partition, next, ResetBy)
	if err != nil {
		return fmt.Errorf("offsetdb: reset %s/%s/%d to %d: %w", group, topic, partition, next, err)
	}
	s.log.Info("offset reset", "group", group, "topic", topic, "partition", partition, "offset", next)
	return nil
}

// sqlPingTimeout bounds a SQL store's Ping.
const sqlPingTimeout = 2 * time.Second

// Ping reports whether the database answers now (for /readyz), within ctx and sqlPingTimeout.
func (s *MySQLStore) Ping(ctx context.Context) error {
	if err := s.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, sqlPingTimeout)
	defer cancel()
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("offsetdb: mysql: ping: %w", err)
	}
	return nil
}

// Close closes the database handle.
func (s *MySQLStore) Close() error {
	if !s.close() {
		return nil
	}
	return s.db.Close()
}
