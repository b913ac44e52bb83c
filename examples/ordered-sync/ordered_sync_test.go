package orderedsync

// TestOrderedSyncExample runs the README's commands against databases of its own: imago serve
// with imago.yaml (the relay of the MariaDB source's outbox), the source (13 changes), the sink
// until it has applied them, then the source again (3 more) and a restarted sink. The replica
// must equal the source row for row, each row's changes applied exactly once (applied =
// version), in order (the sink stops on a version out of order), across the restart, and
// when deleted rows come back.

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/examples/internal/exampletest"
)

func TestOrderedSyncExample(t *testing.T) {
	my, pg := exampletest.MySQL(t), exampletest.Postgres(t)
	imago := exampletest.Build(t, "./cmd/imago")
	source := exampletest.Build(t, "./examples/ordered-sync/source")
	sink := exampletest.Build(t, "./examples/ordered-sync/sink")
	cfg, _ := filepath.Abs("imago.yaml")
	url := exampletest.Serve(t, imago, cfg, "IMAGO_RESOURCES_APP_DSN="+my)

	out := exampletest.Run(t, ".", nil, source, "-dsn", my, "-server", url, "-accounts", "3", "-rounds", "4")
	if !strings.Contains(out, "source: acct-3 v5 deleted") || !strings.Contains(out, "source: 13 changes committed with their outbox rows") {
		t.Fatalf("source printed:\n%s", out)
	}
	got := exampletest.Start(t, ".", nil, sink, "-dsn", pg, "-server", url, "-until", "13").Wait(t, 60*time.Second)
	if strings.Count(got, "offset committed in the same transaction") != 13 || !strings.Contains(got, "sink: 13 changes applied, 2 rows in accounts_replica") {
		t.Fatalf("sink printed:\n%s", got)
	}
	same(t, my, pg)
	t.Logf("the source printed:\n%s\nthe sink printed:\n%s", out, got)

	// More changes, and a sink started again: it goes on from the offsets in its own database.
	out = exampletest.Run(t, ".", nil, source, "-dsn", my, "-server", url, "-accounts", "2", "-rounds", "1")
	if !strings.Contains(out, "source: 3 changes committed") {
		t.Fatalf("source, second run, printed:\n%s", out)
	}
	got = exampletest.Start(t, ".", nil, sink, "-dsn", pg, "-server", url, "-until", "16").Wait(t, 60*time.Second)
	if n := strings.Count(got, "offset committed in the same transaction"); n != 3 || !strings.Contains(got, "sink: 16 changes applied, 1 rows in accounts_replica") {
		t.Fatalf("restarted sink applied %d changes, want the 3 new ones; printed:\n%s", n, got)
	}
	same(t, my, pg)
	t.Logf("the restarted sink printed:\n%s", got)

	// The deleted rows come back (acct-2, deleted by the second run, and acct-3): their
	// versions go on after their deletes, which the sink's tombstones hold, so the sink applies
	// them instead of stopping on a change out of order.
	out = exampletest.Run(t, ".", nil, source, "-dsn", my, "-server", url, "-accounts", "3", "-rounds", "1")
	if !strings.Contains(out, "source: acct-2 v7 ") || !strings.Contains(out, "source: acct-3 v6 ") || !strings.Contains(out, "source: 4 changes committed") {
		t.Fatalf("source, third run, printed:\n%s", out)
	}
	got = exampletest.Start(t, ".", nil, sink, "-dsn", pg, "-server", url, "-until", "20").Wait(t, 60*time.Second)
	if n := strings.Count(got, "offset committed in the same transaction"); n != 4 || !strings.Contains(got, "sink: 20 changes applied, 2 rows in accounts_replica") {
		t.Fatalf("sink, after rows came back, applied %d changes, want 4; printed:\n%s", n, got)
	}
	same(t, my, pg)
}

// same checks that the replica holds the source's rows, and that each row's changes were
// applied exactly once.
func same(t *testing.T, my, pg string) {
	t.Helper()
	src := exampletest.Query(t, "mysql", my, "SELECT CONCAT(id, ' ', balance, ' v', version) FROM accounts ORDER BY id")
	dst := exampletest.Query(t, "pgx", pg, "SELECT id || ' ' || balance || ' v' || version FROM accounts_replica WHERE NOT deleted ORDER BY id")
	if strings.Join(src, "; ") != strings.Join(dst, "; ") {
		t.Errorf("source %v, replica %v", src, dst)
	}
	if bad := exampletest.Query(t, "pgx", pg, "SELECT id FROM accounts_replica WHERE applied <> version"); len(bad) > 0 {
		t.Errorf("rows whose changes were not applied exactly once: %v", bad)
	}
}
