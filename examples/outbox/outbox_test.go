package outbox

// TestOutboxExample runs the README's commands against a PostgreSQL database of its own:
// imago serve with imago.yaml (the relay), the order service, then the consumer, and checks
// what they print: nine order changes, and nine events in order per order id.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
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

	// The order service run again, as after a crash or a commit whose answer was lost: every
	// change is done already, and none is done, nor published, a second time.
	again := exampletest.Run(t, ".", nil, service, "-dsn", pg, "-server", url, "-orders", "3")
	if n := strings.Count(again, "(done already: no new event)"); n != 9 {
		t.Errorf("orderservice run again printed %d changes done already, want 9:\n%s", n, again)
	}
	if st := exampletest.Query(t, "pgx", pg, "SELECT string_agg(id || ' ' || status, ', ' ORDER BY id) FROM orders"); st[0] != "ord-1 shipped, ord-2 shipped, ord-3 shipped" {
		t.Errorf("orders after the second run: %v", st)
	}
	if n := published(t, url); n != 9 {
		t.Errorf("%d events on %s after the order service ran twice, want 9", n, "orders.events")
	}
}

// published waits until the relay has no backlog and returns how many messages the topic holds.
func published(t *testing.T, url string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		var out struct {
			Sources []struct {
				Backlog *int64 `json:"backlog"`
			} `json:"sources"`
		}
		r, err := http.Get(url + "/v1/outbox/sources")
		if err == nil {
			err = json.NewDecoder(r.Body).Decode(&out)
			r.Body.Close()
		}
		if err == nil && len(out.Sources) == 1 && out.Sources[0].Backlog != nil && *out.Sources[0].Backlog == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the relay's backlog did not drain: %v %+v", err, out)
		case <-time.After(100 * time.Millisecond):
		}
	}
	top, err := client.New(url).DescribeTopic(ctx, "orders.events")
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range top.Partitions {
		n += p.EndOffset - p.StartOffset
	}
	return n
}
