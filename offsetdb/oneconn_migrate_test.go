package offsetdb

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net/url"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/imagomq/imago/internal/testenv"
)

// TestOpenWithOneConnectionMigrates: Config{MaxConns: 1, Migrate: true} opens (the migrations
// run on the one connection that holds the migration lock) and the store then works.
// Bounded by a context, so that a deadlock fails fast.
func TestOpenWithOneConnectionMigrates(t *testing.T) {
	for _, store := range []string{"mysql", "postgres"} {
		t.Run(store, func(t *testing.T) {
			dsn := oneConnFreshDatabase(t, store)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := OpenDirect(ctx, Config{Store: store, DSN: dsn, Migrate: true, MaxConns: 1, Logger: quietLogger()})
			if err != nil {
				t.Fatalf("OpenDirect(MaxConns: 1, Migrate: true): %v", err)
			}
			defer s.Close()
			if _, _, err := s.Get(ctx, "g", "t", 0); err != nil {
				t.Fatalf("Get after migrating on one connection: %v", err)
			}
		})
	}
}

// oneConnFreshDatabase creates a database of the test's own and returns a DSN for it; the
// database is dropped after.
func oneConnFreshDatabase(t *testing.T, store string) string {
	t.Helper()
	name := fmt.Sprintf("imago_onec_%x", rand.Uint32())
	var driver, adminDSN, dsn, drop string
	switch store {
	case "mysql":
		driver, adminDSN = "mysql", testenv.MySQLDSN(t)
		c, err := mysql.ParseDSN(adminDSN)
		if err != nil {
			t.Fatal(err)
		}
		c.DBName = name
		dsn, drop = c.FormatDSN(), "DROP DATABASE IF EXISTS "+name
	default:
		driver, adminDSN = "pgx", testenv.PostgresDSN(t)
		u, err := url.Parse(adminDSN)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + name
		dsn, drop = u.String(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"
	}
	admin, err := sql.Open(driver, adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(drop); err != nil {
			t.Logf("%s: %v", drop, err)
		}
		admin.Close()
	})
	return dsn
}
