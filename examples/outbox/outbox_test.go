package outbox

// TestOutboxExample runs the README's commands against a PostgreSQL database of its own:
// imago serve with imago.yaml (the relay), the order service, then the consumer, and checks
// what they print: nine order changes, and nine events in order per order id.

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/examples/internal/exampletest"
)

func TestOutboxExample(t *testing.T) {
	pg := exampletest.Postgres(t)
	imago := exampletest.Build(t, "./cmd/imago")
	service := exampletest.Build(t, "./examples/outbox/orderservice")
	consumer := exampletest.Build(t, "./examples/outbox/consumer")
	cfg, _ := filepath.Abs("imago.yaml")
	url := exampletest.Serve(t, imago, cfg, "IMAGO_RESOURCES_SHOP_DSN="+pg)

	out := exampletest.Run(t, ".", nil, service, "-dsn", pg, "-server", url, "-orders", "3")
	if n := strings.Count(out, "(row and event committed together)"); n != 9 {
		t.Fatalf("orderservice printed %d changes, want 9:\n%s", n, out)
	}
	// The relay publishes a PostgreSQL row once every transaction older than it has ended, in
	// the whole cluster (outbox package documentation): a transaction prepared and forgotten by
	// anyone holds it back. Say so if the wait fails.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("prepared transactions in the cluster (they hold the relay back): %v",
				exampletest.Query(t, "pgx", pg, "SELECT gid || ' since ' || prepared::text FROM pg_prepared_xacts"))
		}
	})
	cons := exampletest.Start(t, ".", nil, consumer, "-server", url, "-n", "9")
	got := cons.Wait(t, 3*time.Minute) // generous: another test's prepared transaction may hold the relay for a while
	lines := cons.WaitLines(t, " in order", 9, time.Second)
	if strings.Contains(got, "OUT OF ORDER") {
		t.Fatalf("events out of order:\n%s", got)
	}
	for i := 1; i <= 3; i++ {
		var seqs []string
		for _, l := range lines {
			if strings.HasPrefix(l, fmt.Sprintf("ord-%d #", i)) {
				seqs = append(seqs, strings.Fields(l)[2])
			}
		}
		if strings.Join(seqs, ",") != "created,paid,shipped" {
			t.Errorf("ord-%d: %v, want created,paid,shipped", i, seqs)
		}
	}
	t.Logf("orderservice printed:\n%s\nthe consumer printed:\n%s", out, got)
}
