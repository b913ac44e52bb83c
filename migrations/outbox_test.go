package migrations

import (
	"context"
	"database/sql"
	"sync"
	"testing"
)

// TestApplyOutbox: the outbox set applies on a fresh database, concurrently from several
// callers and again (idempotent), keeps its own version table, and documents its tables.
func TestApplyOutbox(t *testing.T) {
	for _, dialect := range []string{Postgres, MySQL} {
		t.Run(dialect, func(t *testing.T) {
			driver, dsn := freshDatabase(t, dialect)
			db, err := sql.Open(driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ctx := context.Background()
			var wg sync.WaitGroup
			errs := make([]error, 3)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = ApplyOutbox(ctx, db, dialect)
				}()
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := ApplyOutbox(ctx, db, dialect); err != nil {
				t.Fatal(err)
			}
			var comment string
			q := `SELECT obj_description('imago.outbox'::regclass, 'pg_class')`
			if dialect == MySQL {
				q = `SELECT TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'imago_outbox'`
			}
			if err := db.QueryRowContext(ctx, q).Scan(&comment); err != nil || len(comment) < 40 {
				t.Errorf("outbox table comment %q, %v", comment, err)
			}
			var n int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+OutboxVersionTable[dialect]).Scan(&n); err != nil || n < 2 {
				t.Errorf("version table %s: %d rows, %v", OutboxVersionTable[dialect], n, err)
			}
		})
	}
}
