package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
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
// behind db: imago.outbox and imago.outbox_relay in PostgreSQL (no NOTIFY trigger: see outbox),
// imago_outbox and imago_outbox_relay in MySQL/MariaDB (other names of Dialect are accepted).
// Like Apply it is idempotent and serialized across processes by the migration lock.
func ApplyOutbox(ctx context.Context, db *sql.DB, dialect string) error {
	if d, ok := Dialect(dialect); ok {
		dialect = d
	}
	fsys, err := OutboxFS(dialect)
	if err != nil {
		return err
	}
	return up(ctx, db, dialect, "outbox", fsys, OutboxVersionTable[dialect])
}
