package gateway

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

type fixedOutbox []OutboxSource

func (f fixedOutbox) OutboxSources() []OutboxSource { return f }

// TestOutboxSources: GET /v1/outbox/sources reports what the status provider says, with the
// fields of docs/http-api.md; without a provider it answers an empty list.
func TestOutboxSources(t *testing.T) {
	ts := startServer(t, Options{})
	r := ts.must(http.StatusOK, http.MethodGet, "/v1/outbox/sources", "")
	if string(r.body) != "{\"sources\":[]}\n" {
		t.Errorf("no provider: %s", r.body)
	}

	at := time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)
	ts = startServer(t, Options{Outbox: fixedOutbox{
		{Name: "orders", Active: true, Backlog: 12, RelayedTotal: 345, LastRelayedAt: at, Lag: 42 * time.Millisecond},
		{Name: "wallet", Backlog: -1, LastError: "connect: refused"},
	}})
	r = ts.must(http.StatusOK, http.MethodGet, "/v1/outbox/sources", "")
	var body struct {
		Sources []map[string]any `json:"sources"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	if len(body.Sources) != 2 {
		t.Fatalf("sources: %s", r.body)
	}
	o, w := body.Sources[0], body.Sources[1]
	if o["name"] != "orders" || o["backlog"] != 12.0 || o["relayed_total"] != 345.0 ||
		o["last_relayed_at"] != "2026-01-02T03:04:05.678Z" || o["lag_ms"] != 42.0 || o["active"] != true {
		t.Errorf("orders: %v", o)
	}
	if w["backlog"] != nil || w["last_relayed_at"] != nil || w["last_error"] != "connect: refused" {
		t.Errorf("wallet: %v", w)
	}
	for _, k := range []string{"name", "backlog", "relayed_total", "last_relayed_at", "lag_ms"} {
		if _, ok := w[k]; !ok {
			t.Errorf("wallet lacks %s: %v", k, w)
		}
	}
}
