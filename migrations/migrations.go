// Package migrations owns the SQL schema Imago keeps in an operator's database:
// consumer offsets, partition ends and the consumer lag view, one set of
// migrations per dialect (postgres/ and mysql/), embedded in the binary and
// applied with pressly/goose by `imago migrate` or at start-up. Two more sets
// live in other databases and keep their own goose version tables: the
// transactional outbox (outbox.go, in the application's database) and the XA
// coordinator's decision table (xa.go, in a resource's database, used when
// coordinator.decision_log names that resource).
//
// Naming follows the DBA rules of docs/design.md: in PostgreSQL everything lives in
// schema imago (imago.consumer_offsets, imago.partition_ends,
// imago.consumer_lag, and goose's own imago.goose_version); MySQL and MariaDB
// have no schemas inside a database, so the same names carry the prefix imago_
// (imago_consumer_offsets, ..., imago_goose_version).
//
// Apply is safe to call from several processes at once: it takes a lock for the
// whole run, scoped to the database (pg_advisory_lock in PostgreSQL, whose advisory locks
// belong to one database; GET_LOCK in MySQL/MariaDB, whose lock names are server-wide, so the
// name carries the database: see mysqlLockName), held on one dedicated connection, so a second
// process waits and then finds nothing to do. The migrations run on that same connection, so
// Apply needs one connection of the caller's pool, not two: a pool limited to one connection
// works. The migrations themselves are
// idempotent (IF NOT EXISTS, OR REPLACE) so that a database whose tables were
// created by hand, or whose version table was dropped, is still brought up to
// date rather than failing.
//
// A database whose schema version is above the highest this binary knows (a newer binary
// migrated it) is left as it is, with a Warn naming the set and both versions: Apply does not
// refuse it, because refusing would keep an older binary from starting while a deploy is
// rolled back, and the migrations are additive (new tables, columns with defaults, views; the
// PostgreSQL outbox's 00003 only drops the NOTIFY trigger that woke a relay early), so an older
// binary keeps working on a newer schema. A migration that is not additive must keep that
// promise some other way, or change this decision.
package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/imagomq/imago/internal/mysqlpool"
	"github.com/pressly/goose/v3"
)

// Dialects accepted by Apply.
const (
	Postgres = "postgres"
	MySQL    = "mysql"
)

// VersionTable names goose's version table per dialect.
var VersionTable = map[string]string{
	Postgres: "imago.goose_version",
	MySQL:    "imago_goose_version",
}

// lockKey is the PostgreSQL advisory lock key (and lockName the start of the MySQL GET_LOCK
// name, see mysqlLockName) that serializes concurrent runs of Apply. 0x696d61676f is "imago" in ASCII.
const (
	lockKey  int64 = 0x696d61676f
	lockName       = "imago_migrations"
)

// lockWait bounds how long Apply waits for another process's run.
const lockWait = 5 * time.Minute

//go:embed postgres/*.sql mysql/*.sql
var files embed.FS

// FS returns the embedded migrations of a dialect ("postgres" or "mysql"),
// for tooling that wants to list or print them.
func FS(dialect string) (fs.FS, error) {
	if _, ok := VersionTable[dialect]; !ok {
		return nil, fmt.Errorf("migrations: unknown dialect %q (want %q or %q)", dialect, Postgres, MySQL)
	}
	return fs.Sub(files, dialect)
}

// Apply brings the database behind db up to the latest migration of dialect
// ("postgres" or "mysql"; other names of Dialect are accepted). It is idempotent
// and safe to run concurrently from several processes (see the package
// comment). For pgx use github.com/jackc/pgx/v5/stdlib to get a *sql.DB.
func Apply(ctx context.Context, db *sql.DB, dialect string) error {
	if d, ok := Dialect(dialect); ok {
		dialect = d
	}
	fsys, err := FS(dialect)
	if err != nil {
		return err
	}
	return up(ctx, db, dialect, "", fsys, VersionTable[dialect])
}

// up applies the migration set fsys (named set, "" for the DBA tables) to db under the
// migration lock of the database, recording versions in versionTable.
func up(ctx context.Context, db *sql.DB, dialect, set string, fsys fs.FS, versionTable string) error {
	what := dialect
	if set != "" {
		what = set + " " + dialect
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrations: connect: %w", err)
	}
	defer conn.Close()

	unlock, err := lock(ctx, conn, dialect)
	if err != nil {
		return err
	}
	defer unlock()

	if dialect == Postgres {
		// goose creates its version table (in schema imago) before the first migration runs,
		// so the schema must exist first. Under the lock, so no race.
		if _, err := conn.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS imago`); err != nil {
			return fmt.Errorf("migrations: create schema imago: %w", err)
		}
	}

	gd := goose.DialectPostgres
	if dialect == MySQL {
		gd = goose.DialectMySQL
	}
	// goose runs on the session holding the lock, not on db's pool: see withSessionDB.
	return withSessionDB(conn, func(sdb *sql.DB) error {
		p, err := goose.NewProvider(gd, sdb, fsys,
			goose.WithTableName(versionTable),
			goose.WithDisableGlobalRegistry(true),
			goose.WithSlog(slog.Default()),
		)
		if err != nil {
			return fmt.Errorf("migrations: %s: %w", what, err)
		}
		res, err := p.Up(ctx)
		if err != nil {
			return fmt.Errorf("migrations: %s up: %w", what, err)
		}
		for _, r := range res {
			slog.InfoContext(ctx, "migration applied", "set", set, "dialect", dialect,
				"version", r.Source.Version, "duration", r.Duration)
		}
		// goose passes over versions above the ones it knows: say so (see the package comment).
		dbVersion, known, err := p.GetVersions(ctx)
		if err != nil {
			return fmt.Errorf("migrations: %s: read the schema version: %w", what, err)
		}
		if dbVersion > known {
			warnNewerSchema(ctx, set, dialect, dbVersion, known)
		}
		return nil
	})
}

// warnNewerSchema logs that the database's schema version of a set is above the highest
// version this binary knows (a newer binary migrated it): Apply goes on, see the package comment.
func warnNewerSchema(ctx context.Context, set, dialect string, dbVersion, known int64) {
	if set == "" {
		set = "offsets"
	}
	slog.WarnContext(ctx, "migrations: the database schema is newer than this binary knows; "+
		"going on, as every migration is additive, but upgrade this binary",
		"set", set, "dialect", dialect, "database_version", dbVersion, "binary_version", known)
}

// lock takes the migration lock of the database on conn and returns its release.
func lock(ctx context.Context, conn *sql.Conn, dialect string) (func(), error) {
	switch dialect {
	case Postgres:
		lctx, cancel := context.WithTimeout(ctx, lockWait)
		defer cancel()
		if _, err := conn.ExecContext(lctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
			return nil, fmt.Errorf("migrations: take advisory lock: %w", err)
		}
		return func() {
			// The lock also dies with the session; the release is a courtesy.
			_, _ = conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, lockKey)
		}, nil
	default:
		var dbName sql.NullString
		if err := conn.QueryRowContext(ctx, `SELECT DATABASE()`).Scan(&dbName); err != nil {
			return nil, fmt.Errorf("migrations: SELECT DATABASE(): %w", err)
		}
		name := mysqlLockName(dbName.String)
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, ?)`, name, int(lockWait.Seconds())).Scan(&got); err != nil {
			return nil, fmt.Errorf("migrations: GET_LOCK: %w", err)
		}
		if !got.Valid || got.Int64 != 1 {
			return nil, errors.New("migrations: another process holds the migration lock (GET_LOCK timed out)")
		}
		return func() {
			_, _ = conn.ExecContext(context.Background(), `SELECT RELEASE_LOCK(?)`, name)
		}, nil
	}
}

// mysqlLockName is the GET_LOCK name of the migration lock in database db (the session's
// DATABASE()): "imago_migrations/<db>". GET_LOCK names are server-wide, so the database is in
// the name: two deployments in two databases of one server do not wait for each other, while
// every process migrating one database takes the same name. A name is at most 64 characters:
// a longer one is "imago_migrations/" and the first 40 hex digits of the SHA-256 of db, which
// an operator computes with CONCAT('imago_migrations/', LEFT(SHA2(DATABASE(), 256), 40)).
// No database selected (db empty) gives plain "imago_migrations". Binaries from before the
// database was in the name take plain "imago_migrations": during an upgrade one of them may
// migrate beside a newer one, which the re-runnable migrations survive (the loser of a race
// may fail once and succeed at its next start).
func mysqlLockName(db string) string {
	if db == "" {
		return lockName
	}
	return mysqlpool.LockName(lockName+"/", db)
}
