package outbox_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/imagomq/imago/outbox"
)

// fastTrxReader reads information_schema.innodb_trx every 20ms on a connection of its own
// until the test ends, as a monitoring agent or a second relay on the same server would.
// InnoDB refreshes the table's cache only when nobody has read it for 100 ms, so while this
// runs the cache stays frozen at its content from the reader's first read.
func fastTrxReader(t *testing.T, e *dbEnv) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := e.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer conn.Close()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			var n int
			_ = conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.innodb_trx`).Scan(&n)
			if i == 0 {
				close(first)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	<-first
}

// TestGapStaleInnodbTrx: a writer holding the lower id opens while another session reads
// innodb_trx faster than every 100 ms, so the table's cache never shows it. The relay must not
// take the frozen view for a fresh one: it may stall while the cache is stale, but it must not
// publish the higher row first and then lose the lower one below its cursor.
func TestGapStaleInnodbTrx(t *testing.T) {
	e := newDBEnv(t, outbox.MySQL)
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 1)
	ctx := context.Background()
	fastTrxReader(t, e)

	opts := e.relayOptions()
	opts.GapCheckDelay = 50 * time.Millisecond
	r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
	waitFor(t, 10*time.Second, "relay active", func() bool { return r.Status().Active })

	mk := func(seq int) outbox.Message {
		p, _ := json.Marshal(payload{Key: "k", Seq: seq})
		return outbox.Message{Topic: topic, Key: "k", Payload: p}
	}
	low, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer low.Rollback()
	if err := e.w.Write(ctx, low, mk(1)); err != nil {
		t.Fatal(err)
	}
	if err := e.writeTx(ctx, topic, "k", []int{2}, true); err != nil {
		t.Fatal(err)
	}
	// The writer stays open for 2 s, far longer than any gap delay; nothing may be published
	// meanwhile (the assertion is that nothing happens: there is no condition to wait on).
	time.Sleep(2 * time.Second)
	if msgs := fetchAllBroker(t, b, topic); len(msgs) != 0 {
		t.Fatalf("published %+v while the lower id was still open", msgs)
	}
	if err := low.Commit(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "both rows relayed", func() bool { return r.Status().RelayedTotal == 2 })
	msgs := fetchAllBroker(t, b, topic)
	if len(msgs) != 2 || msgs[0].p.Seq != 1 || msgs[1].p.Seq != 2 {
		t.Fatalf("published %+v, want seq 1 then 2", msgs)
	}
	if n := e.rowsLeft(t); n != 0 {
		t.Fatalf("%d rows left in the outbox", n)
	}
}

// TestGapIdleReadOnlyTrx: a pooled connection with autocommit=0 that ran a SELECT stays idle
// in an open read-only transaction (MariaDB reports every such transaction with trx_id 0).
// It can never fill an id gap, so a gap left by a rolled-back insert must still be passed.
func TestGapIdleReadOnlyTrx(t *testing.T) {
	e := newDBEnv(t, outbox.MySQL)
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 1)
	ctx := context.Background()

	idle, err := e.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := idle.ExecContext(ctx, `SET autocommit = 0`); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := idle.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+e.table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	defer idle.ExecContext(context.Background(), `ROLLBACK`)

	if err := e.writeTx(ctx, topic, "k", []int{1}, false); err != nil {
		t.Fatal(err)
	}
	if err := e.writeTx(ctx, topic, "k", []int{2}, true); err != nil {
		t.Fatal(err)
	}
	opts := e.relayOptions()
	r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
	waitFor(t, 10*time.Second, "the committed row relayed past the rolled-back one", func() bool { return r.Status().RelayedTotal == 1 })
	msgs := fetchAllBroker(t, b, topic)
	if len(msgs) != 1 || msgs[0].p.Seq != 2 {
		t.Fatalf("published %+v, want seq 2 only", msgs)
	}
}

// TestGapWriterSessionTimeZone: InnoDB renders trx_started in the server's system time zone,
// whatever the session's; a relay whose session runs in another zone (here five hours behind
// UTC, as a global time_zone setting would make it) must still wait for the writer that holds
// the lower id, and publish both rows in order once it commits.
func TestGapWriterSessionTimeZone(t *testing.T) {
	e := newDBEnv(t, outbox.MySQL)
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 1)
	ctx := context.Background()

	opts := e.relayOptions()
	sep := "?"
	if strings.Contains(opts.DSN, "?") {
		sep = "&"
	}
	opts.DSN += sep + "time_zone=" + url.QueryEscape("'-05:00'")
	opts.GapCheckDelay = 50 * time.Millisecond
	r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
	waitFor(t, 10*time.Second, "relay active", func() bool { return r.Status().Active })

	low, err := e.db.BeginTx(ctx, nil)
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
	// The writer stays open for 1.5 s, far longer than the gap check takes with a fresh view;
	// nothing may be published meanwhile (no condition to wait on: the assertion is that
	// nothing happens).
	time.Sleep(1500 * time.Millisecond)
	if msgs := fetchAllBroker(t, b, topic); len(msgs) != 0 {
		t.Fatalf("published %+v while the lower id was still open", msgs)
	}
	if err := low.Commit(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "both rows relayed", func() bool { return r.Status().RelayedTotal == 2 })
	if msgs := fetchAllBroker(t, b, topic); len(msgs) != 2 || msgs[0].p.Seq != 1 || msgs[1].p.Seq != 2 {
		t.Fatalf("published %+v, want seq 1 then 2", msgs)
	}
}

// TestGapWriterClockSetBack: the database server's clock is set back by 2 s after the writer
// holding the lower id started and before the gap check's sentinel did, so by trx_started the
// writer looks younger than the sentinel, by less than the time passed plus the truncation.
// The relay must still wait for it (it wrote before the sentinel: its trx_id is lower), and
// publish both rows in order once it commits. A real server's clock cannot be stepped in a
// test, so the test shifts the writer's trx_started in the views the gap check reads
// (StepTrxClock), which is what such a step shows it.
func TestGapWriterClockSetBack(t *testing.T) {
	openWriterGap(t, func(thread int64) (func() int64, func()) { return outbox.StepTrxClock(thread, 2*time.Second) }, nil,
		// A relay that takes the writer for a younger one passes the gap at the first view that
		// shows its sentinel, and publishes the higher row; one that waits reads a view again.
		"two views of the gap check", 2)
}

// TestGapWithoutProcessPrivilege: a relay whose database user lacks PROCESS cannot read
// innodb_trx; its gap check (whose sentinel still takes its lock on the state table) falls
// back to passing a gap once it is older than GapGrace, so the row after a rolled-back insert
// is published.
func TestGapWithoutProcessPrivilege(t *testing.T) {
	e := newDBEnv(t, outbox.MySQL)
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 1)
	ctx := context.Background()

	cfg, err := mysql.ParseDSN(e.dsn)
	if err != nil {
		t.Fatal(err)
	}
	user := uniqueName(t, "imago_np_")
	pass := hex.EncodeToString([]byte(user))
	if _, err := e.db.ExecContext(ctx, `CREATE USER '`+user+`'@'%' IDENTIFIED BY '`+pass+`'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = e.db.ExecContext(context.Background(), `DROP USER '`+user+`'@'%'`) })
	if _, err := e.db.ExecContext(ctx, "GRANT SELECT, INSERT, UPDATE, DELETE ON `"+cfg.DBName+"`.* TO '"+user+"'@'%'"); err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Passwd = user, pass

	if err := e.writeTx(ctx, topic, "k", []int{1}, false); err != nil {
		t.Fatal(err)
	}
	if err := e.writeTx(ctx, topic, "k", []int{2}, true); err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	opts := e.relayOptions()
	opts.DSN = cfg.FormatDSN()
	opts.GapCheckDelay = 50 * time.Millisecond
	opts.GapGrace = 300 * time.Millisecond
	opts.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
	waitFor(t, 15*time.Second, "the committed row relayed past the rolled-back one", func() bool {
		return r.Status().RelayedTotal == 1 || r.Status().LastError != ""
	})
	if err := r.Status().LastError; err != "" {
		t.Fatalf("relay: %s", err)
	}
	if !logs.has("grant PROCESS") {
		t.Fatal("the relay did not log the fallback without PROCESS")
	}
	if msgs := fetchAllBroker(t, b, topic); len(msgs) != 1 || msgs[0].p.Seq != 2 {
		t.Fatalf("published %+v, want seq 2 only", msgs)
	}
}
