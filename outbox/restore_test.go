package outbox_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/outbox"
)

// logBuf collects a relay's JSON log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// command returns the "command" attribute of the last log line that has one.
func (l *logBuf) command() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	cmd := ""
	for _, line := range strings.Split(l.b.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			if c, ok := rec["command"].(string); ok {
				cmd = c
			}
		}
	}
	return cmd
}

// has reports whether a log line holds s.
func (l *logBuf) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.b.String(), s)
}

// runUntilStop runs a relay until it returns or the timeout passes; it returns Run's error
// (nil: still running at the timeout, then stopped).
func runUntilStop(t *testing.T, opts outbox.Options, pub outbox.Publisher, d time.Duration) error {
	t.Helper()
	r, err := outbox.New(opts, pub)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	err = r.Run(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// TestEpochAfterRegression: after a failover or a restore the state row's cursor is back
// before rows the relay already published, and the outbox holds other rows under the same ids.
// The first rebuilt batch reuses a published idempotency key with other messages: the relay
// stops and logs the operator command that moves the source to a new epoch; once it is run,
// the rebuilt rows are published under new keys, and nothing twice.
func TestEpochAfterRegression(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			e := newDBEnv(t, d)
			topic := uniqueName(t, "t.")
			b := openBroker(t, topic, 1)
			ctx := context.Background()
			pub := outbox.BrokerPublisher{B: b}
			l := newLedger()
			if err := e.writeTx(ctx, topic, "k", []int{1, 2, 3}, true); err != nil {
				t.Fatal(err)
			}
			l.add("k", []int{1, 2, 3}, true)
			r := startRelay(t, e.relayOptions(), pub)
			waitFor(t, 20*time.Second, "the first rows relayed", func() bool { return r.Status().RelayedTotal == 3 })
			r.Close()
			var ids []int64
			// The restored database: the cursor from before the batch, and rows 1..3 rebuilt
			// with other messages under the same ids.
			q := `UPDATE imago.outbox_relay SET cursor_txid = '0', cursor_id = 0, claim_txid = NULL, claim_id = NULL WHERE source = $1`
			if d == outbox.MySQL {
				q = `UPDATE imago_outbox_relay SET cursor_id = 0, claim_id = NULL WHERE source = ?`
			}
			if _, err := e.db.ExecContext(ctx, q, e.source); err != nil {
				t.Fatal(err)
			}
			if err := e.writeTx(ctx, topic, "k", []int{11, 12, 13}, true); err != nil {
				t.Fatal(err)
			}
			l.add("k", []int{11, 12, 13}, true)
			rows, err := e.db.QueryContext(ctx, `SELECT id FROM `+e.table+` ORDER BY id`)
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			rows.Close()
			renumber := `UPDATE ` + e.table + ` SET id = $1 WHERE id = $2`
			if d == outbox.MySQL {
				renumber = `UPDATE ` + e.table + ` SET id = ? WHERE id = ?`
			}
			for i, id := range ids { // the first history's ids: 1, 2, 3 of this table
				if _, err := e.db.ExecContext(ctx, renumber, int64(i+1), id); err != nil {
					t.Fatal(err)
				}
			}

			var logs logBuf
			opts := e.relayOptions()
			opts.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			err = runUntilStop(t, opts, pub, 20*time.Second)
			if !errors.Is(err, outbox.ErrPermanent) {
				t.Fatalf("relay on a rebuilt batch: Run returned %v, want it to stop", err)
			}
			cmd := logs.command()
			if cmd == "" {
				t.Fatalf("no operator command logged; log:\n%s", logs.b.String())
			}
			t.Logf("operator command: %s", cmd)
			if _, err := e.db.ExecContext(ctx, cmd); err != nil {
				t.Fatalf("run %q: %v", cmd, err)
			}
			r = startRelay(t, e.relayOptions(), pub)
			waitFor(t, 20*time.Second, "the rebuilt rows relayed", func() bool { return e.rowsLeft(t) == 0 })
			l.check(t, fetchAllBroker(t, b, topic))
		})
	}
}

// TestRefuseAfterRestore: the PostgreSQL database was dumped and restored into another cluster
// (or cut over by logical replication): the state row's cursor holds transaction ids of the
// old cluster, above any this cluster hands out, so new rows sort below it. The relay must
// refuse to run (not report an empty backlog forever) and log the operator command that resets
// the cursor; after it, the rows are published.
func TestRefuseAfterRestore(t *testing.T) {
	e := newDBEnv(t, outbox.Postgres)
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 1)
	ctx := context.Background()
	pub := outbox.BrokerPublisher{B: b}
	l := newLedger()
	if err := e.writeTx(ctx, topic, "k", []int{1, 2}, true); err != nil {
		t.Fatal(err)
	}
	l.add("k", []int{1, 2}, true)
	r := startRelay(t, e.relayOptions(), pub)
	waitFor(t, 20*time.Second, "the first rows relayed", func() bool { return r.Status().RelayedTotal == 2 })
	r.Close()
	// The old cluster had handed out a million more transaction ids than this one.
	if _, err := e.db.ExecContext(ctx, `UPDATE imago.outbox_relay
		SET cursor_txid = ((pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000)::text)::xid8 WHERE source = $1`, e.source); err != nil {
		t.Fatal(err)
	}
	if err := e.writeTx(ctx, topic, "k", []int{3, 4}, true); err != nil {
		t.Fatal(err)
	}
	l.add("k", []int{3, 4}, true)

	var logs logBuf
	opts := e.relayOptions()
	opts.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
	err := runUntilStop(t, opts, pub, 10*time.Second)
	if !errors.Is(err, outbox.ErrPermanent) {
		t.Fatalf("relay after a restore: Run returned %v, want it to refuse", err)
	}
	cmd := logs.command()
	if cmd == "" {
		t.Fatalf("no operator command logged; log:\n%s", logs.b.String())
	}
	t.Logf("operator command: %s", cmd)
	if _, err := e.db.ExecContext(ctx, cmd); err != nil {
		t.Fatalf("run %q: %v", cmd, err)
	}
	r = startRelay(t, e.relayOptions(), pub)
	waitFor(t, 20*time.Second, "the new rows relayed", func() bool { return e.rowsLeft(t) == 0 })
	r.Close()
	l.check(t, fetchAllBroker(t, b, topic))

	// A cursor recorded in another cluster (its system identifier stored with it) is refused
	// too, even when its transaction ids happen to be in range here.
	if _, err := e.db.ExecContext(ctx, `UPDATE imago.outbox_relay SET system_id = '1' WHERE source = $1`, e.source); err != nil {
		t.Fatal(err)
	}
	if err := runUntilStop(t, e.relayOptions(), pub, 10*time.Second); !errors.Is(err, outbox.ErrSourceMoved) {
		t.Fatalf("relay with another cluster's cursor: Run returned %v, want ErrSourceMoved", err)
	}
}
