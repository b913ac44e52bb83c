package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/outbox"
)

// outboxTable creates an outbox table of its own (same shape as the migrated one) and
// returns the database, its name and a writer; everything is dropped at the end.
func outboxTable(t *testing.T, dialect string) (*sql.DB, string, string, *outbox.Writer) {
	t.Helper()
	ctx := context.Background()
	b := make([]byte, 6)
	rand.Read(b)
	suffix := hex.EncodeToString(b)
	var dsn, driver, table string
	var ddl []string
	if dialect == outbox.Postgres {
		dsn, driver, table = testenv.PostgresDSN(t), "pgx", "imago.outbox_c"+suffix
		ddl = []string{`CREATE TABLE ` + table + ` (LIKE imago.outbox INCLUDING ALL)`,
			`CREATE TRIGGER outbox_notify AFTER INSERT ON ` + table + ` FOR EACH STATEMENT EXECUTE FUNCTION imago.outbox_notify()`}
	} else {
		dsn, driver, table = testenv.MySQLDSN(t), "mysql", "imago_outbox_c"+suffix
		ddl = []string{`CREATE TABLE ` + table + ` LIKE imago_outbox`}
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := migrations.ApplyOutbox(ctx, db, dialect); err != nil {
		t.Fatal(err)
	}
	for _, q := range ddl {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		db.Exec(`DROP TABLE IF EXISTS ` + table)
		if dialect == outbox.Postgres {
			db.Exec(`DELETE FROM imago.outbox_relay WHERE source LIKE $1`, "%"+suffix)
		} else {
			db.Exec(`DELETE FROM imago_outbox_relay WHERE source LIKE ?`, "%"+suffix)
		}
	})
	w, err := outbox.NewWriter(dialect, table)
	if err != nil {
		t.Fatal(err)
	}
	return db, dsn, table, w
}

func writeOutbox(t *testing.T, db *sql.DB, w *outbox.Writer, topic string, n int) {
	t.Helper()
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := w.Write(context.Background(), tx, outbox.Message{Topic: topic, Key: "k", Payload: []byte{byte('a' + i%26)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func endOffset(t *testing.T, c *client.Client, topic string) int64 {
	t.Helper()
	info, err := c.DescribeTopic(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	return info.Partitions[0].EndOffset
}

// TestServeRelaysOutbox: `imago serve` with an outbox source in its configuration relays it,
// reports it on GET /v1/outbox/sources and exposes the outbox metrics; and `imago outbox
// relay` relays a MySQL source into that server over HTTP.
func TestServeRelaysOutbox(t *testing.T) {
	pg, pgDSN, pgTable, pgW := outboxTable(t, outbox.Postgres)
	my, myDSN, myTable, myW := outboxTable(t, outbox.MySQL)
	dir := t.TempDir()
	source := "orders_" + pgTable[len("imago.outbox_c"):]
	cfg := "resources:\n  ledger: {driver: postgres, dsn: \"" + pgDSN + "\"}\n" +
		"outbox:\n  - {name: " + source + ", resource: ledger, table: " + pgTable + "}\n"
	cfgPath := filepath.Join(dir, "imago.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, filepath.Join(dir, "data"), "--config", cfgPath)
	c := srv.client()
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, "outbox.orders", client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	writeOutbox(t, pg, pgW, "outbox.orders", 25)
	waitUntil(t, 20*time.Second, "the PostgreSQL rows to be relayed", func() bool { return endOffset(t, c, "outbox.orders") == 25 })

	var body struct {
		Sources []struct {
			Name          string  `json:"name"`
			Active        bool    `json:"active"`
			RelayedTotal  int64   `json:"relayed_total"`
			LastRelayedAt *string `json:"last_relayed_at"`
			Backlog       *int64  `json:"backlog"`
		} `json:"sources"`
	}
	waitUntil(t, 10*time.Second, "the source status", func() bool {
		resp, err := http.Get(srv.URL + "/v1/outbox/sources")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /v1/outbox/sources: %d %v", resp.StatusCode, err)
		}
		return len(body.Sources) == 1 && body.Sources[0].RelayedTotal == 25
	})
	s := body.Sources[0]
	if s.Name != source || !s.Active || s.LastRelayedAt == nil {
		t.Errorf("source status %+v", s)
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`imago_outbox_relayed_total{source="` + source + `"} 25`, "imago_outbox_lag_seconds_bucket", "imago_outbox_backlog", "imago_outbox_last_relayed_timestamp_seconds"} {
		if !bytes.Contains(m, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// imago outbox relay, on its own, over HTTP.
	if _, err := c.CreateTopic(ctx, "outbox.wallet", client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	writeOutbox(t, my, myW, "outbox.wallet", 10)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() {
		done <- run(rctx, []string{"outbox", "relay", "--server", srv.URL, "--name", "wallet_" + myTable[len("imago_outbox_c"):],
			"--driver", "mysql", "--dsn", myDSN, "--table", myTable, "--migrate"}, strings.NewReader(""), io.Discard, &stderr)
	}()
	waitUntil(t, 20*time.Second, "the MySQL rows to be relayed", func() bool { return endOffset(t, c, "outbox.wallet") == 10 })
	cancel()
	if code := <-done; code != exitOK {
		t.Errorf("imago outbox relay exited %d: %s", code, stderr.String())
	}
}

// TestOutboxRelayUsage: bad flags are usage errors.
func TestOutboxRelayUsage(t *testing.T) {
	var stderr bytes.Buffer
	for _, args := range [][]string{
		{"outbox", "relay"},
		{"outbox", "relay", "--name", "x", "--driver", "postgres", "--dsn", "postgres://x", "--mode", "bogus"},
		{"outbox", "relay", "--name", "x", "--driver", "oracle", "--dsn", "x"},
	} {
		stderr.Reset()
		if code := run(context.Background(), args, strings.NewReader(""), io.Discard, &stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, stderr.String())
		}
	}
}

// waitUntil polls cond every 20ms until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A source's relay tuning in the configuration reaches the relay's options; absent keys leave
// the relay's defaults.
func TestOutboxOptionsCarryTheSourcesTuning(t *testing.T) {
	cfg := config.Default()
	cfg.Resources = map[string]config.Resource{"ledger": {Driver: "postgres", DSN: "postgres://x@127.0.0.1/test"}}
	got, err := outboxOptions(cfg, config.OutboxSource{Name: "orders", Resource: "ledger", Table: "imago.outbox",
		Mode: "mark", BatchSize: 250, MinPoll: 3 * time.Millisecond, MaxPoll: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "orders" || got.Dialect != "postgres" || got.Table != "imago.outbox" || got.Mode != outbox.ModeMark ||
		got.BatchSize != 250 || got.MinPoll != 3*time.Millisecond || got.MaxPoll != 2*time.Second {
		t.Fatalf("options %+v", got)
	}
	got, err = outboxOptions(cfg, config.OutboxSource{Name: "orders", Resource: "ledger", Table: "imago.outbox"})
	if err != nil {
		t.Fatal(err)
	}
	if got.BatchSize != 0 || got.MinPoll != 0 || got.MaxPoll != 0 {
		t.Fatalf("absent keys set %+v (the relay's defaults apply to zero)", got)
	}
}

// imago serve refuses, at start and on every node, a source whose relay would refuse to
// start: poll intervals that do not fit together or with the relay's session timeout, or a
// MySQL batch with more ids than one statement can bind.
func TestOutboxSourcesCheckedAtStart(t *testing.T) {
	cfg := config.Default()
	cfg.Resources = map[string]config.Resource{
		"ledger": {Driver: "postgres", DSN: "postgres://x@127.0.0.1/test"},
		"shop":   {Driver: "mysql", DSN: "root@tcp(127.0.0.1:3306)/test"},
	}
	for _, tt := range []struct {
		name    string
		src     config.OutboxSource
		wantErr string // "" means accepted
	}{
		{name: "defaults", src: config.OutboxSource{}},
		{name: "tuned", src: config.OutboxSource{BatchSize: 200, MinPoll: 2 * time.Millisecond, MaxPoll: time.Second}},
		{name: "min_poll above max_poll", src: config.OutboxSource{MinPoll: time.Second, MaxPoll: 500 * time.Millisecond},
			wantErr: "min poll 1s exceeds max poll 500ms"},
		{name: "min_poll above the default max_poll", src: config.OutboxSource{MinPoll: time.Second},
			wantErr: "min poll 1s exceeds max poll 200ms"},
		{name: "max_poll beyond the session timeout", src: config.OutboxSource{MaxPoll: 10 * time.Second},
			wantErr: "twice max poll (10s)"},
		{name: "resource missing is config's to report", src: config.OutboxSource{Resource: "nope"}},
		{name: "large batch_size on PostgreSQL", src: config.OutboxSource{BatchSize: 100000}},
		{name: "batch_size beyond MySQL's parameters", src: config.OutboxSource{Resource: "shop", BatchSize: 65536},
			wantErr: "batch size 65536: at most 65535 on MySQL"},
		{name: "largest batch_size on MySQL", src: config.OutboxSource{Resource: "shop", BatchSize: 65535}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			src := tt.src
			src.Name, src.Table = "orders", "imago.outbox"
			if src.Resource == "" {
				src.Resource = "ledger"
			}
			c.Outbox = []config.OutboxSource{src}
			err := checkOutboxSources(c)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
