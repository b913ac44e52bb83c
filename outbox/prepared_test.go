package outbox_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/imagomq/imago/outbox"
)

// TestPostgresPreparedWriter: a two-phase branch (PREPARE TRANSACTION, later COMMIT PREPARED,
// as a global transaction's PostgreSQL step runs) can write the outbox. PostgreSQL refuses to
// prepare a transaction that issued NOTIFY, so nothing on the write path of the migrated
// imago.outbox may notify. The prepared row holds back the rows of transactions that started
// after it, and once committed is relayed first.
func TestPostgresPreparedWriter(t *testing.T) {
	e := newDBEnv(t, outbox.Postgres)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	gid := uniqueName(t, "imago_outbox_test_")
	t.Cleanup(func() { // never leave a prepared transaction behind: it holds back every relay
		_, _ = conn.Exec(context.Background(), `ROLLBACK PREPARED '`+gid+`'`)
	})
	prepare := func(w *outbox.Writer, m outbox.Message) {
		t.Helper()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WritePgx(ctx, tx, m); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `PREPARE TRANSACTION '`+gid+`'`); err != nil {
			t.Fatalf("prepare a transaction that wrote an outbox row: %v", err)
		}
	}

	// The default table, as migrated: prepare, then roll back (nothing stays in it).
	def, err := outbox.NewWriter(outbox.Postgres, "")
	if err != nil {
		t.Fatal(err)
	}
	prepare(def, outbox.Message{Topic: "prepared.probe", Payload: []byte("x")})
	if _, err := conn.Exec(ctx, `ROLLBACK PREPARED '`+gid+`'`); err != nil {
		t.Fatal(err)
	}

	// The test's table: row 0 in a prepared transaction, row 1 committed after it.
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 1)
	l := newLedger()
	msg := func(seq int) outbox.Message {
		p, _ := json.Marshal(payload{Key: "k", Seq: seq})
		return outbox.Message{Topic: topic, Key: "k", Payload: p}
	}
	prepare(e.w, msg(0))
	l.add("k", []int{0}, true)
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.w.Write(ctx, tx, msg(1)); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	l.add("k", []int{1}, true)
	opts := e.relayOptions()
	opts.BacklogEvery = 20 * time.Millisecond
	r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
	waitFor(t, 15*time.Second, "the relay to see the committed row", func() bool { return r.Status().Backlog == 1 })
	time.Sleep(300 * time.Millisecond) // asserting that nothing is published meanwhile
	if got := fetchAllBroker(t, b, topic); len(got) != 0 {
		t.Fatalf("published %d messages while an earlier transaction was prepared", len(got))
	}
	if _, err := conn.Exec(ctx, `COMMIT PREPARED '`+gid+`'`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the rows relayed", func() bool { return e.rowsLeft(t) == 0 || r.Status().LastError != "" })
	if err := r.Status().LastError; err != "" {
		t.Fatalf("relay: %s", err)
	}
	l.check(t, fetchAllBroker(t, b, topic))
}
