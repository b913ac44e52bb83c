package client_test

import (
	"bytes"
	"context"
	"database/sql"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestTxConsumerOffsetPastEndStops: the broker's data directory was restored from a backup
// older than the application's database (or the topic was created again): the database holds
// offset 6 for a partition that now ends at 1. New messages take the offsets 1..5 of the lost
// ones; a consumer that drops what the broker delivers below its stored offset skips them
// silently and for good (and applies 6 and after as if nothing were missing). It must not
// guess which messages it applied: it stops with an error that says the stored offset is
// past the partition's end, and applies nothing. Against a real PostgreSQL.
func TestTxConsumerOffsetPastEndStops(t *testing.T) {
	c, topic, group, db, url := txSetup(t, "pgx") // the restored log: offset 0 only
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, `INSERT INTO imago.consumer_offsets (group_name, topic, partition, next_offset, committed_by)
		VALUES ($1, $2, 0, 6, 'before-the-restore')`, group, topic); err != nil {
		t.Fatal(err)
	}
	// delivered is set once a poll answer carried a message to the consumer.
	var delivered atomic.Bool
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if err != nil || r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/members/") {
			return resp, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"offset"`)) {
			delivered.Store(true)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return resp, nil
	})}
	tc := client.NewTxConsumer(client.New(url, client.WithHTTPClient(hc)), group, []string{topic}, db, "postgres",
		client.ConsumerPollWait(100*time.Millisecond), client.ConsumerLogger(quietLogger()))
	applied := make(chan int64, 100)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() {
		done <- tc.Run(rctx, func(_ context.Context, _ *sql.Tx, m client.FetchedMessage) error {
			applied <- m.Offset
			return nil
		})
	}()
	wait := 10 * time.Second
	for !delivered.Load() {
		select {
		case err := <-done:
			done <- err // Run stopped at the message at offset 0
			wait = 0
		case <-ctx.Done():
			t.Fatal("no poll delivered the message at offset 0")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if wait > 0 {
		produceN(ctx, t, c, topic, 0, 7) // offsets 1..7: new messages, 1..5 below the stored offset
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "past the partition's end") {
			t.Fatalf("Run: %v; want the error that the stored offset is past the partition's end", err)
		}
	case <-time.After(max(wait, time.Second)):
		close(applied)
		var offs []int64
		for o := range applied {
			offs = append(offs, o)
		}
		t.Fatalf("the consumer kept running with its stored offset 6 past the partition's end 1; it applied %v and skipped the new messages below 6", offs)
	}
	if len(applied) > 0 {
		t.Fatalf("the consumer applied offset %d", <-applied)
	}
	if off := storedOffset(t, db, "pgx", group, topic); off != 6 {
		t.Fatalf("stored offset %d, want 6 (untouched: an operator decides)", off)
	}
}
