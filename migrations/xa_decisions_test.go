package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"testing"
)

// The XA coordinator's decision table (the xa set): its columns, each commented, in both
// dialects, and nothing of the offsets set created with it.
func TestXADecisionsTable(t *testing.T) {
	wantCols := "[node_id gtrid client_id status created_at decided_at finished_at updated_at decided_by record request_digest]"
	for _, dialect := range []string{Postgres, MySQL} {
		t.Run(dialect, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			driver, dsn := freshDatabase(t, dialect)
			db := openDB(t, driver, dsn)
			if err := ApplyXA(ctx, db, dialect); err != nil {
				t.Fatal(err)
			}
			var tableComment string
			var q string
			if dialect == Postgres {
				if err := db.QueryRowContext(ctx, `SELECT coalesce(obj_description('imago.xa_decisions'::regclass, 'pg_class'), '')`).Scan(&tableComment); err != nil {
					t.Fatal(err)
				}
				q = `SELECT c.column_name, coalesce(col_description('imago.xa_decisions'::regclass, c.ordinal_position::int), '')
				       FROM information_schema.columns c
				      WHERE c.table_schema = 'imago' AND c.table_name = 'xa_decisions' ORDER BY c.ordinal_position`
			} else {
				if err := db.QueryRowContext(ctx, `SELECT table_comment FROM information_schema.tables
					WHERE table_schema = DATABASE() AND table_name = 'imago_xa_decisions'`).Scan(&tableComment); err != nil {
					t.Fatal(err)
				}
				q = `SELECT column_name, column_comment FROM information_schema.columns
				      WHERE table_schema = DATABASE() AND table_name = 'imago_xa_decisions' ORDER BY ordinal_position`
			}
			if tableComment == "" {
				t.Error("the decision table has no comment")
			}
			rows, err := db.QueryContext(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			var cols []string
			for rows.Next() {
				var col, comment string
				if err := rows.Scan(&col, &comment); err != nil {
					t.Fatal(err)
				}
				cols = append(cols, col)
				if comment == "" {
					t.Errorf("column %s has no comment", col)
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(cols) != wantCols {
				t.Errorf("columns %v, want %s", cols, wantCols)
			}
			checkDecisionKey(t, db, dialect)
			// The resource's database gets the decision table only, not the offset tables.
			offsets := `SELECT count(*) FROM information_schema.tables WHERE table_schema = 'imago' AND table_name = 'consumer_offsets'`
			if dialect == MySQL {
				offsets = `SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'imago_consumer_offsets'`
			}
			var n int
			if err := db.QueryRowContext(ctx, offsets).Scan(&n); err != nil || n != 0 {
				t.Errorf("ApplyXA created the offset tables too (%d, %v)", n, err)
			}
			// Applying again is a no-op; the offsets set still applies on top, with its own versions.
			if err := ApplyXA(ctx, db, dialect); err != nil {
				t.Fatal(err)
			}
			if err := Apply(ctx, db, dialect); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// checkDecisionKey: one row per (node_id, gtrid); the same gtrid under another node is another row.
func checkDecisionKey(t *testing.T, db *sql.DB, dialect string) {
	t.Helper()
	ins := "INSERT INTO imago.xa_decisions (node_id, gtrid, status, record) VALUES ($1, $2, $3, $4)"
	if dialect == MySQL {
		ins = "INSERT INTO imago_xa_decisions (node_id, gtrid, status, record) VALUES (?, ?, ?, ?)"
	}
	g := "0123456789abcdef000000000000000000000001"
	for i, node := range []string{"0123456789abcdef", "fedcba9876543210", "0123456789abcdef"} {
		_, err := db.Exec(ins, node, g, "committing", []byte{1})
		if dup := i == 2; (err != nil) != dup {
			t.Errorf("insert %d (node %s): %v; want a duplicate-key error: %v", i, node, err, dup)
		}
	}
}
