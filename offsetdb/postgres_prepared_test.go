package offsetdb

import (
	"context"
	"strings"
	"testing"

	"github.com/imagomq/imago/internal/testenv"
)

// The PostgreSQL store's upsert takes its rows as five arrays, so one prepared
// statement serves every batch size: a connection parses it once (pgx's
// statement cache) and from then on a flush is a bind and an execute. Batches
// of 1, 3, 17 and 64 rows leave one prepared upsert on the store's only
// connection, executed four times.
func TestPostgresUpsertIsOnePreparedStatement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Migrations first, on a pool of their own: they need more than one connection.
	m, err := OpenPostgres(ctx, Config{DSN: testenv.PostgresDSN(t), Migrate: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	s, err := OpenPostgres(ctx, Config{DSN: testenv.PostgresDSN(t), MaxConns: 1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	group := uniqueName(t, "prep")
	for i, n := range []int{1, 3, 17, 64} {
		batch := make([]Offset, n)
		for p := range batch {
			batch[p] = Offset{Group: group, Topic: "t", Partition: p, Next: int64(i + 1)}
		}
		if err := s.Commit(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := s.Pool().Query(ctx, `SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var upserts int
	var executions int64
	for rows.Next() {
		var stmt string
		var n int64
		if err := rows.Scan(&stmt, &n); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(stmt, "INSERT INTO imago.consumer_offsets") {
			upserts++
			executions += n
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if upserts != 1 || executions != 4 {
		t.Fatalf("%d prepared upserts executed %d times for 4 batches of different sizes, want 1 executed 4 times", upserts, executions)
	}
	if o := mustGet(t, s, group, "t", 63); o.Next != 4 {
		t.Fatalf("partition 63 at %d, want 4", o.Next)
	}
}
