package outbox_test

import (
	"context"
	"strings"
	"testing"

	"github.com/imagomq/imago/outbox"
)

// TestPostgresRelayPlans: on an outbox table that is mostly deleted rows and has no
// statistics (a queue table between two vacuums; autovacuum is off for it here), every
// statement the relay runs reads the (txid, id) index or the primary key, as a custom and as
// a generic plan: none scans the table sequentially (the check for rows not yet final did, 3 ms
// per empty read on 60 MB) and none starts parallel workers (the backlog count did, holding
// the relay for 85 ms).
func TestPostgresRelayPlans(t *testing.T) {
	e := newDBEnv(t, outbox.Postgres)
	ctx := context.Background()
	for _, q := range []string{
		`ALTER TABLE ` + e.table + ` SET (autovacuum_enabled = false)`,
		`INSERT INTO ` + e.table + ` (topic, key, payload) SELECT 't', 'k' || g, convert_to(repeat('x', 1000), 'UTF8') FROM generate_series(1, 40000) g`,
		`DELETE FROM ` + e.table,
		`INSERT INTO ` + e.table + ` (topic, key, payload) SELECT 't', 'k' || g, convert_to(repeat('x', 1000), 'UTF8') FROM generate_series(1, 20) g`,
	} {
		if _, err := e.db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	var lo, hi uint64
	var loID, hiID int64
	if err := e.db.QueryRowContext(ctx, `SELECT min(txid)::text::bigint, min(id), max(txid)::text::bigint, max(id) FROM `+e.table).Scan(&lo, &loID, &hi, &hiID); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []outbox.Mode{outbox.ModeDelete, outbox.ModeMark} {
		opts := e.relayOptions()
		opts.Mode = mode
		plans, err := outbox.PGPlans(ctx, opts, lo, 0, hi, hiID, []int64{loID, loID + 1, loID + 2})
		if err != nil {
			t.Fatal(err)
		}
		if len(plans) != 12 {
			t.Fatalf("%d plans", len(plans))
		}
		for name, plan := range plans {
			if strings.Contains(plan, `"Seq Scan"`) || strings.Contains(plan, `"Node Type": "Gather`) {
				t.Errorf("%s mode, %s: the plan scans the table or starts parallel workers:\n%s", mode, name, plan)
			}
		}
	}
}
