package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/outbox"
)

// lateRestartEnv is a MySQL source whose first relay completed a batch with an id missing
// (a rolled-back insert) and stopped: what a deploy, a crash or a failover leaves behind.
type lateRestartEnv struct {
	*dbEnv
	topic       string
	b           *broker.Broker
	cursor, inc int64
}

// relayPastGap writes a rolled-back row and a committed one, relays the committed one with a
// first relay (options changed by set), stops that relay, and returns the source's cursor.
func relayPastGap(t *testing.T, set ...func(*outbox.Options)) *lateRestartEnv {
	t.Helper()
	e := &lateRestartEnv{dbEnv: newDBEnv(t, outbox.MySQL), topic: uniqueName(t, "t.")}
	e.b = openBroker(t, e.topic, 1)
	ctx := context.Background()
	if err := e.writeTx(ctx, e.topic, "k", []int{1}, false); err != nil { // leaves a gap
		t.Fatal(err)
	}
	if err := e.writeTx(ctx, e.topic, "k", []int{2}, true); err != nil {
		t.Fatal(err)
	}
	first, done := e.run(t, time.Hour, set...) // its own rechecks never come: it stops first
	waitFor(t, 15*time.Second, "the committed row relayed past the gap", func() bool {
		return first.Status().RelayedTotal == 1 || first.Status().LastError != ""
	})
	if err := first.Status().LastError; err != "" {
		t.Fatalf("first relay: %s", err)
	}
	done.stop(t)
	if err := e.db.QueryRow(`SELECT cursor_id, @@auto_increment_increment FROM imago_outbox_relay WHERE source = ?`, e.source).Scan(&e.cursor, &e.inc); err != nil {
		t.Fatal(err)
	}
	return e
}

// running is a relay's Run in a goroutine.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

// stop cancels the relay and waits for it to end as a cancelled relay does.
func (r running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("relay stopped with %v, want it cancelled", err)
	}
}

// run starts a new relay (a new Relay value, as a restarted process or a standby has) of the
// source, whose late-row rechecks come first and 3×first after a range's completion; set, if
// any, changes its options further.
func (e *lateRestartEnv) run(t *testing.T, first time.Duration, set ...func(*outbox.Options)) (*outbox.Relay, running) {
	t.Helper()
	opts := e.relayOptions()
	opts.GapCheckDelay = 50 * time.Millisecond
	opts.GapSettle = 200 * time.Millisecond
	outbox.SetLateChecks(&opts, first, 3*first)
	for _, f := range set {
		f(&opts)
	}
	r, err := outbox.New(opts, outbox.BrokerPublisher{B: e.b})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	run := running{cancel: cancel, done: make(chan error, 1)}
	go func() { run.done <- r.Run(ctx) }()
	t.Cleanup(cancel)
	return r, run
}

// TestLateRowAfterRestartStops: a row that commits below the cursor after its batch was
// completed, while the relay that completed the batch is gone (a deploy, a crash, a failover
// to a standby), is found by the relay that starts next: it reads again what an earlier
// process completed, on the same schedule, and stops with ErrStrayRows naming the row, which
// stays in place for the operator. Before, the rechecks lived only in the memory of the relay
// that completed the batch, and the row stayed below the cursor, never published.
func TestLateRowAfterRestartStops(t *testing.T) {
	e := relayPastGap(t)
	late := e.cursor - e.inc // the id of the rolled-back insert
	if _, err := e.db.Exec(`INSERT INTO `+e.table+" (id, topic, `key`, payload) VALUES (?, ?, 'k', '{\"s\":1}')", late, e.topic); err != nil {
		t.Fatal(err)
	}

	const first = 300 * time.Millisecond
	r, run := e.run(t, first)
	waitFor(t, 15*time.Second, "the new relay active", func() bool { return r.Status().Active })
	select {
	case err := <-run.done:
		want := fmt.Sprintf("ids [%d] committed below the cursor", late)
		if !errors.Is(err, outbox.ErrStrayRows) || !strings.Contains(err.Error(), want) {
			t.Fatalf("relay stopped with %v, want ErrStrayRows: %s", err, want)
		}
	case <-time.After(first + 5*time.Second):
		t.Fatalf("the new relay runs on %s after its first recheck was due, with row %d below its cursor %d, never to be published", first+5*time.Second, late, e.cursor)
	}
	if n := e.rowsLeft(t); n != 1 {
		t.Fatalf("%d rows left in the outbox, want the late row in place", n)
	}
}

// TestRestartWithoutLateRowsRunsOn: the relay that starts after another reads the range below
// the cursor at each delay, finds nothing there, and relays on without an error.
func TestRestartWithoutLateRowsRunsOn(t *testing.T) {
	e := relayPastGap(t)
	var below atomic.Int32 // rounds that read (0, cursor] to its end
	r, run := e.run(t, 100*time.Millisecond, func(o *outbox.Options) {
		outbox.OnLateChecked(o, func(lo, hi int64, round int) {
			if lo == 0 && hi == e.cursor {
				below.Add(1)
			}
		})
	})
	waitFor(t, 15*time.Second, "both rechecks of the range below the cursor", func() bool {
		return below.Load() == 2 || r.Status().LastError != ""
	})
	if err := r.Status().LastError; err != "" {
		t.Fatalf("relay: %s", err)
	}
	if err := e.writeTx(context.Background(), e.topic, "k", []int{3}, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the row written after the restart relayed", func() bool {
		return r.Status().RelayedTotal == 2 || r.Status().LastError != ""
	})
	if err := r.Status().LastError; err != "" {
		t.Fatalf("relay: %s", err)
	}
	select {
	case err := <-run.done:
		t.Fatalf("relay stopped: %v", err)
	default:
	}
	run.stop(t)
	if n := e.rowsLeft(t); n != 0 {
		t.Fatalf("%d rows left in the outbox, want none", n)
	}
}

// TestLateRowAfterRestartStopsMarkMode: in mark mode the published rows stay below the
// cursor, so the range a new relay reads again is read a few rows a statement (the bound that
// keeps a large marked table from holding the relay's session); the reading goes on from
// where the last statement ended, and the row not relayed, last below the cursor, stops the
// relay.
func TestLateRowAfterRestartStopsMarkMode(t *testing.T) {
	mark := func(o *outbox.Options) { o.Mode = outbox.ModeMark }
	e := relayPastGap(t, mark)
	ctx := context.Background()
	if err := e.writeTx(ctx, e.topic, "k", []int{3, 4, 5, 6}, true); err != nil {
		t.Fatal(err)
	}
	r, run := e.run(t, time.Hour, mark)
	waitFor(t, 15*time.Second, "the rows relayed", func() bool {
		return r.Status().RelayedTotal == 5 || r.Status().LastError != ""
	})
	if err := r.Status().LastError; err != "" {
		t.Fatalf("relay: %s", err)
	}
	run.stop(t)
	var last int64
	if err := e.db.QueryRow(`SELECT MAX(id) FROM ` + e.table).Scan(&last); err != nil {
		t.Fatal(err)
	}
	// The last row below the cursor loses its mark: a row committed there late, unpublished.
	if _, err := e.db.Exec(`UPDATE `+e.table+` SET relayed_at = NULL WHERE id = ?`, last); err != nil {
		t.Fatal(err)
	}

	const first = 200 * time.Millisecond
	r, run = e.run(t, first, mark, func(o *outbox.Options) { outbox.SetLateScanRows(o, 2) })
	waitFor(t, 15*time.Second, "the new relay active", func() bool { return r.Status().Active })
	select {
	case err := <-run.done:
		want := fmt.Sprintf("ids [%d] committed below the cursor", last)
		if !errors.Is(err, outbox.ErrStrayRows) || !strings.Contains(err.Error(), want) {
			t.Fatalf("relay stopped with %v, want ErrStrayRows: %s", err, want)
		}
	case <-time.After(first + 5*time.Second):
		t.Fatalf("the new relay runs on with row %d below its cursor not relayed", last)
	}
}
