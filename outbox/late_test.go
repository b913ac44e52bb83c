package outbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/outbox"
)

// TestLateRowBelowCursorStops: a row that commits below the cursor after its batch was completed
// (the gap check passed its id, and the writer, kept off the CPU for longer than GapSettle or
// inserting an explicit id, committed it later) is never read again by the relay: lost without
// a trace. The relay reads the range of such a batch again after its completion, and stops the
// source with ErrStrayRows and the row in place, for the operator to re-insert. (A test cannot
// keep a writer inside the server off the CPU in that instant; the row inserted with the
// missing id after the batch was completed is the same row arriving late.)
func TestLateRowBelowCursorStops(t *testing.T) {
	e := newDBEnv(t, outbox.MySQL)
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 1)
	ctx := context.Background()

	if err := e.writeTx(ctx, topic, "k", []int{1}, false); err != nil { // leaves a gap
		t.Fatal(err)
	}
	if err := e.writeTx(ctx, topic, "k", []int{2}, true); err != nil {
		t.Fatal(err)
	}
	opts := e.relayOptions()
	opts.GapCheckDelay = 50 * time.Millisecond
	opts.GapSettle = 200 * time.Millisecond
	outbox.SetLateChecks(&opts, 500*time.Millisecond, 2*time.Second)
	r, err := outbox.New(opts, outbox.BrokerPublisher{B: b})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	waitFor(t, 15*time.Second, "the committed row relayed past the gap", func() bool {
		return r.Status().RelayedTotal == 1 || r.Status().LastError != ""
	})
	if err := r.Status().LastError; err != "" {
		t.Fatalf("relay: %s", err)
	}

	var cursor, inc int64
	if err := e.db.QueryRow(`SELECT cursor_id, @@auto_increment_increment FROM imago_outbox_relay WHERE source = ?`, e.source).Scan(&cursor, &inc); err != nil {
		t.Fatal(err)
	}
	late := cursor - inc // the id of the rolled-back insert
	if _, err := e.db.Exec(`INSERT INTO `+e.table+" (id, topic, `key`, payload) VALUES (?, ?, 'k', '{\"s\":1}')", late, topic); err != nil {
		t.Fatal(err)
	}

	select {
	case err := <-done:
		if !errors.Is(err, outbox.ErrStrayRows) || !strings.Contains(err.Error(), "committed below the cursor") {
			t.Fatalf("relay stopped with %v, want ErrStrayRows for the row below the cursor", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("the relay runs on with row %d below its cursor %d, never to be published", late, cursor)
	}
	if n := e.rowsLeft(t); n != 1 {
		t.Fatalf("%d rows left in the outbox, want the late row in place", n)
	}
}
