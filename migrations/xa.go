package migrations

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
)

// XAVersionTable names goose's version table of the XA coordinator's migrations per dialect.
// The decision table lives in a database of a configured resource (a wallet or ledger
// database), which need not hold Imago's offsets, so its migrations are a set of their own,
// as the outbox's are.
var XAVersionTable = map[string]string{
	Postgres: "imago.goose_xa_version",
	MySQL:    "imago_goose_xa_version",
}

//go:embed xa/postgres/*.sql xa/mysql/*.sql
var xaFiles embed.FS

// XAFS returns the embedded XA coordinator migrations of a dialect ("postgres" or "mysql").
func XAFS(dialect string) (fs.FS, error) {
	if _, ok := XAVersionTable[dialect]; !ok {
		return nil, fmt.Errorf("migrations: unknown dialect %q (want %q or %q)", dialect, Postgres, MySQL)
	}
	return fs.Sub(xaFiles, "xa/"+dialect)
}

// ApplyXA creates or updates the XA coordinator's decision table in db: imago.xa_decisions
// in PostgreSQL, imago_xa_decisions in MySQL/MariaDB (other names of Dialect are accepted).
// Like Apply it is idempotent and serialized across processes by the migration lock.
func ApplyXA(ctx context.Context, db *sql.DB, dialect string) error {
	if d, ok := Dialect(dialect); ok {
		dialect = d
	}
	fsys, err := XAFS(dialect)
	if err != nil {
		return err
	}
	return up(ctx, db, dialect, "xa", fsys, XAVersionTable[dialect])
}
