package outbox_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/imagomq/imago/outbox"
)

// TestGapInvisibleWriter: the writer holding the lower id is missing from the gap check's
// first fresh view of innodb_trx, as a writer is whose INSERT allocated its id and that was
// descheduled before InnoDB listed its transaction (a test cannot deschedule a thread inside
// the server in that instant, so HideTrxOnce takes the real, open writer out of that one
// view). The check must not pass the gap on that view alone: its second round, GapSettle
// later, sees the writer and waits; once it commits both rows are published once, in order.
func TestGapInvisibleWriter(t *testing.T) {
	openWriterGap(t, func(thread int64) (func() int64, func()) { return outbox.HideTrxOnce(thread) },
		func(o *outbox.Options) { o.GapSettle = 300 * time.Millisecond },
		// A check that trusts the first fresh view passes the gap and publishes the higher row;
		// one that confirms reads a view again after its second round's decision.
		"a view after the second round", 1)
}

// openWriterGap is the scene of the gap-check tests with an open writer: a MySQL relay
// (GapCheckDelay 50 ms, then tune), the views of innodb_trx it reads changed by the seam that
// hook installs for the writer's thread, a writer holding the lower id open (seq 1) while the
// higher row (seq 2) commits. Once the seam's count of views reaches views (or a row is
// published), nothing may be published; after the writer commits, both rows are, once, in
// order, and the outbox is empty.
func openWriterGap(t *testing.T, hook func(thread int64) (views func() int64, restore func()), tune func(*outbox.Options), what string, views int64) {
	t.Helper()
	e := newDBEnv(t, outbox.MySQL)
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 1)
	ctx := context.Background()

	conn, err := e.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var thread int64
	if err := conn.QueryRowContext(ctx, `SELECT CONNECTION_ID()`).Scan(&thread); err != nil {
		t.Fatal(err)
	}
	seen, restore := hook(thread)
	t.Cleanup(restore) // after the relay's Close, registered later

	opts := e.relayOptions()
	opts.GapCheckDelay = 50 * time.Millisecond
	if tune != nil {
		tune(&opts)
	}
	r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
	waitFor(t, 10*time.Second, "relay active", func() bool { return r.Status().Active })

	low, err := conn.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer low.Rollback()
	p, _ := json.Marshal(payload{Key: "k", Seq: 1})
	if err := e.w.Write(ctx, low, outbox.Message{Topic: topic, Key: "k", Payload: p}); err != nil {
		t.Fatal(err)
	}
	if err := e.writeTx(ctx, topic, "k", []int{2}, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, what+", or a row published", func() bool {
		return seen() >= views || r.Status().RelayedTotal > 0 || r.Status().LastError != ""
	})
	if msgs := fetchAllBroker(t, b, topic); len(msgs) != 0 {
		t.Fatalf("published %+v while the lower id was still open", msgs)
	}
	if err := low.Commit(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "both rows relayed", func() bool {
		return r.Status().RelayedTotal == 2 || r.Status().LastError != ""
	})
	if err := r.Status().LastError; err != "" {
		t.Fatalf("relay: %s", err)
	}
	if msgs := fetchAllBroker(t, b, topic); len(msgs) != 2 || msgs[0].p.Seq != 1 || msgs[1].p.Seq != 2 {
		t.Fatalf("published %+v, want seq 1 then 2", msgs)
	}
	if n := e.rowsLeft(t); n != 0 {
		t.Fatalf("%d rows left in the outbox", n)
	}
}

// TestGapSettleRolledBack: a gap left by a rolled-back insert, which no writer fills, is still
// passed, once the second round (GapSettle after the gap was seen) finds no writer either.
func TestGapSettleRolledBack(t *testing.T) {
	e := newDBEnv(t, outbox.MySQL)
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 1)
	ctx := context.Background()

	if err := e.writeTx(ctx, topic, "k", []int{1}, false); err != nil {
		t.Fatal(err)
	}
	if err := e.writeTx(ctx, topic, "k", []int{2}, true); err != nil {
		t.Fatal(err)
	}
	opts := e.relayOptions()
	opts.GapCheckDelay = 50 * time.Millisecond
	opts.GapSettle = 500 * time.Millisecond
	start := time.Now()
	r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
	waitFor(t, 15*time.Second, "the committed row relayed past the rolled-back one", func() bool {
		return r.Status().RelayedTotal == 1 || r.Status().LastError != ""
	})
	if err := r.Status().LastError; err != "" {
		t.Fatalf("relay: %s", err)
	}
	if took := time.Since(start); took < opts.GapSettle {
		t.Fatalf("the gap was passed after %s, before GapSettle (%s)", took, opts.GapSettle)
	}
	if msgs := fetchAllBroker(t, b, topic); len(msgs) != 1 || msgs[0].p.Seq != 2 {
		t.Fatalf("published %+v, want seq 2 only", msgs)
	}
}
