package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/outbox"
)

// writeChunks writes msgs in transactions of at most per messages (a MySQL statement must fit
// max_allowed_packet).
func (e *dbEnv) writeChunks(t *testing.T, msgs []outbox.Message, per int) {
	t.Helper()
	ctx := context.Background()
	for len(msgs) > 0 {
		n := min(per, len(msgs))
		tx, err := e.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.w.Write(ctx, tx, msgs[:n]...); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[n:]
	}
}

// TestBatchesFitTheGatewayBodyLimit: with the default BatchBytes, the produce requests of a
// relay publishing over HTTP stay under the gateway's default body limit (16 MiB) whatever
// its rows hold: a batch is cut by its rows' size as the request encodes them, headers and
// base64 included. Here 200 rows of a few bytes of payload and 100 KiB of headers (20 MB in
// all, each message far below the broker's 1 MiB) are all relayed, headers intact; counting
// payload and key alone put them in one request of 20 MB, refused with 413, and the relay
// stopped.
func TestBatchesFitTheGatewayBodyLimit(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			e := newDBEnv(t, d)
			topic := uniqueName(t, "t.")
			b := openBroker(t, topic, 1)
			gw, err := gateway.New(b, gateway.Options{})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(gw.Handler())
			defer srv.Close()
			const n = 200
			trace := strings.Repeat("h", 100<<10)
			msgs := make([]outbox.Message, n)
			for i := range msgs {
				msgs[i] = outbox.Message{Topic: topic, Payload: fmt.Appendf(nil, "p%d", i), Headers: map[string]string{"trace": trace}}
			}
			e.writeChunks(t, msgs, 20)

			r, err := outbox.New(e.relayOptions(), outbox.ClientPublisher{C: client.New(srv.URL)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			stopped := make(chan error, 1)
			go func() { stopped <- r.Run(ctx) }()
			waitFor(t, 2*time.Minute, "every row relayed", func() bool {
				select {
				case err := <-stopped:
					t.Fatalf("the relay stopped on valid rows: %v (status %+v)", err, r.Status())
				default:
				}
				return r.Status().RelayedTotal == n
			})
			cancel()
			<-stopped
			got := fetchMessages(t, b, topic)
			if len(got) != n {
				t.Fatalf("the topic holds %d messages, want %d", len(got), n)
			}
			for i, m := range got {
				if want := fmt.Sprintf("p%d", i); string(m.Value) != want || len(m.Headers) != 1 || m.Headers[0].Value != trace {
					t.Fatalf("message %d: value %q (want %q), %d headers", i, m.Value, want, len(m.Headers))
				}
			}
		})
	}
}

// TestRowTooLargeStopsTheRelay: a row the broker cannot take (over its 1 MiB limit on one
// message, or a produce request over the gateway's body limit by itself) stops the relay with
// an error that names the row and a logged command that takes it out of the outbox; the rows
// before it are published, the rows after it wait, and once the command is run a restarted
// relay publishes them, nothing twice. The operator's steps are in docs/outbox.md.
func TestRowTooLargeStopsTheRelay(t *testing.T) {
	type publisherCase struct {
		name    string
		dialect string
		huge    int // payload bytes of the row too large
		limit   int64
		batch   int
	}
	cases := []publisherCase{
		// In-process broker (imago serve): the broker refuses a message over 1 MiB.
		{name: "broker/postgres", dialect: outbox.Postgres, huge: 1536 << 10},
		{name: "broker/mysql", dialect: outbox.MySQL, huge: 1536 << 10},
		// Over HTTP (imago outbox relay): a gateway whose body limit is 1 MiB, and a relay whose
		// BatchBytes is that limit; a row of 900 KiB is 1.2 MiB in base64.
		{name: "http/postgres", dialect: outbox.Postgres, huge: 900 << 10, limit: 1 << 20, batch: 1 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e := newDBEnv(t, c.dialect)
			topic := uniqueName(t, "t.")
			b := openBroker(t, topic, 1)
			var pub outbox.Publisher = outbox.BrokerPublisher{B: b}
			if c.limit > 0 {
				gw, err := gateway.New(b, gateway.Options{MaxBodyBytes: c.limit})
				if err != nil {
					t.Fatal(err)
				}
				srv := httptest.NewServer(gw.Handler())
				defer srv.Close()
				pub = outbox.ClientPublisher{C: client.New(srv.URL)}
			}
			e.writeChunks(t, []outbox.Message{
				{Topic: topic, Payload: []byte("before")},
				{Topic: topic, Payload: bytes.Repeat([]byte("x"), c.huge)},
				{Topic: topic, Payload: []byte("after")},
			}, 3)
			var ids []int64
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
			if err := rows.Close(); err != nil || len(ids) != 3 {
				t.Fatalf("ids %v, %v", ids, err)
			}

			logs := &logBuf{}
			opts := e.relayOptions()
			opts.BatchBytes = c.batch
			opts.Logger = slog.New(slog.NewJSONHandler(logs, nil))
			err = runUntilStop(t, opts, pub, time.Minute)
			if !errors.Is(err, outbox.ErrTooLarge) || !errors.Is(err, outbox.ErrPermanent) {
				t.Fatalf("relay: %v; want ErrTooLarge", err)
			}
			if want := fmt.Sprintf("row %d of topic %s is too large", ids[1], topic); !strings.Contains(err.Error(), want) {
				t.Errorf("the error does not name the row (%q): %v", want, err)
			}
			cmd := logs.command()
			if want := fmt.Sprintf("DELETE FROM %s WHERE id = %d", e.table, ids[1]); cmd != want {
				t.Fatalf("logged command %q, want %q", cmd, want)
			}
			if got := fetchMessages(t, b, topic); len(got) != 1 || string(got[0].Value) != "before" {
				t.Fatalf("before the stop the topic holds %d messages, want the row before the large one", len(got))
			}

			if _, err := e.db.ExecContext(ctx, cmd); err != nil {
				t.Fatal(err)
			}
			r := startRelay(t, e.relayOptions(), pub)
			waitFor(t, 30*time.Second, "the rows after the large one", func() bool { return r.Status().RelayedTotal == 2 })
			var values []string
			for _, m := range fetchMessages(t, b, topic) {
				values = append(values, string(m.Value))
			}
			if fmt.Sprint(values) != "[before after]" {
				t.Fatalf("the topic holds %q, want [before after]", values)
			}
		})
	}
}
