package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/pressly/goose/v3"
)

// OutboxVersionTable names goose's version table of the outbox migrations per dialect. The
// outbox lives in the application's database, which may or may not also hold Imago's offsets,
// so its migrations are a set of their own with their own version table.
var OutboxVersionTable = map[string]string{
	Postgres: "imago.goose_outbox_version",
	MySQL:    "imago_goose_outbox_version",
}

//go:embed outbox/postgres/*.sql outbox/mysql/*.sql
var outboxFiles embed.FS

// OutboxFS returns the embedded outbox migrations of a dialect ("postgres" or "mysql").
func OutboxFS(dialect string) (fs.FS, error) {
	if _, ok := OutboxVersionTable[dialect]; !ok {
		return nil, fmt.Errorf("migrations: unknown dialect %q (want %q or %q)", dialect, Postgres, MySQL)
	}
	return fs.Sub(outboxFiles, "outbox/"+dialect)
}

// ApplyOutbox creates or updates the transactional outbox in the application's database
// behind db: imago.outbox and imago.outbox_relay in PostgreSQL (with the NOTIFY trigger),
// imago_outbox and imago_outbox_relay in MySQL/MariaDB ("mariadb" is accepted as "mysql").
// Like Apply it is idempotent and serialized across processes by the migration lock.
func ApplyOutbox(ctx context.Context, db *sql.DB, dialect string) error {
	if dialect == "mariadb" {
		dialect = MySQL
	}
	fsys, err := OutboxFS(dialect)
	if err != nil {
		return err
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
		if _, err := conn.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS imago`); err != nil {
			return fmt.Errorf("migrations: create schema imago: %w", err)
		}
	}
	gd := goose.DialectPostgres
	if dialect == MySQL {
		gd = goose.DialectMySQL
	}
	p, err := goose.NewProvider(gd, db, fsys,
		goose.WithTableName(OutboxVersionTable[dialect]),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(slog.Default()),
	)
	if err != nil {
		return fmt.Errorf("migrations: outbox %s: %w", dialect, err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrations: outbox %s up: %w", dialect, err)
	}
	for _, r := range res {
		slog.InfoContext(ctx, "outbox migration applied", "dialect", dialect,
			"version", r.Source.Version, "duration", r.Duration)
	}
	return nil
}
