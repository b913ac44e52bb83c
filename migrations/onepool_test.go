package migrations

import (
	"context"
	"testing"
	"time"
)

// TestApplyOnAOneConnectionPool: Apply, ApplyXA and ApplyOutbox work on a pool limited to
// one connection (an application's *sql.DB, offsetdb's MaxConns 1): the migrations run on
// the session that holds the migration lock instead of waiting for a second connection.
// Bounded by a context, so that the old deadlock fails fast.
func TestApplyOnAOneConnectionPool(t *testing.T) {
	for _, d := range []string{Postgres, MySQL} {
		t.Run(d, func(t *testing.T) {
			driver, dsn := freshDatabase(t, d)
			db := openDB(t, driver, dsn)
			db.SetMaxOpenConns(1)
			for _, s := range applySets(d) {
				for range 2 { // a fresh database, then nothing to do
					ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					start := time.Now()
					err := s.apply(ctx, db, d)
					cancel()
					if err != nil {
						t.Fatalf("%s on a 1-connection pool, after %v: %v", s.name, time.Since(start).Round(time.Millisecond), err)
					}
				}
			}
			// The pool's connection is usable afterwards, and the lock was released with it.
			var n int
			if err := db.QueryRowContext(context.Background(), `SELECT 1`).Scan(&n); err != nil {
				t.Fatal(err)
			}
		})
	}
}
