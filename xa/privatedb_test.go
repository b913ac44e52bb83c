package xa

import (
	"database/sql"
	"testing"

	"github.com/imagomq/imago/internal/privatedb"
)

// A private database server (internal/privatedb): a MariaDB or PostgreSQL of the test's own
// that the test can kill -9 at the moment it chooses and start again on the same data. The
// shared servers are never touched.

// privateMariaDB starts a private MariaDB and returns it with a pool on its database "test",
// opened as serve opens a resource's.
func privateMariaDB(t *testing.T, opts ...privatedb.Option) (*privatedb.Server, *sql.DB) {
	t.Helper()
	p := privatedb.MariaDB(t, opts...)
	db, err := OpenMySQLDB(p.DSN())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return p, db
}

// privatePostgres starts a private PostgreSQL (max_prepared_transactions 64) and returns it
// with a pool on its database "postgres".
func privatePostgres(t *testing.T) (*privatedb.Server, *sql.DB) {
	t.Helper()
	p := privatedb.Postgres(t)
	return p, p.DB()
}
