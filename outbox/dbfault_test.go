package outbox_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/privatedb"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/outbox"
)

// Database faults in the middle of a relay round, on a private MariaDB or PostgreSQL
// (internal/privatedb) that the test kills with SIGKILL and starts again on the same data, or
// whose relay session it ends (KILL CONNECTION, pg_terminate_backend), or whose answer to the
// completing transaction's COMMIT it loses (privatedb.LossyProxy between the relay and the
// server). The shared servers are never touched.

// faultPublisher publishes to an in-process broker and runs the test's hook on the n-th call.
type faultPublisher struct {
	b     *broker.Broker
	calls atomic.Int32
	rows  atomic.Int64 // rows of the calls so far (a republished batch counts again)
	at    int32
	// before runs before the n-th call reaches the broker; when it returns false the call is
	// abandoned (the relay is being stopped: the publish waits for its context to end).
	before func() bool
	after  func() // runs after the broker acknowledged the n-th call
}

func (p *faultPublisher) Publish(ctx context.Context, topic string, msgs []outbox.Message, key string) error {
	n := p.calls.Add(1)
	if n == p.at && p.before != nil && !p.before() {
		<-ctx.Done()
		return ctx.Err()
	}
	if err := (outbox.BrokerPublisher{B: p.b}).Publish(ctx, topic, msgs, key); err != nil {
		return err
	}
	p.rows.Add(int64(len(msgs)))
	if n == p.at && p.after != nil {
		p.after()
	}
	return nil
}

// privateOutbox is a private server with the outbox migrations, the relay's DSN through a
// lossy proxy, and a writer's pool straight to the server.
type privateOutbox struct {
	srv   *privatedb.Server
	proxy *privatedb.LossyProxy
	e     *dbEnv
}

func newPrivateOutbox(t *testing.T, dialect string, opts ...privatedb.Option) *privateOutbox {
	t.Helper()
	srv := privatedb.Open(t, dialect, opts...)
	db := srv.DB()
	db.SetMaxIdleConns(0) // the writers' sessions do not outlive a restart of the server
	if err := migrations.ApplyOutbox(context.Background(), db, dialect); err != nil {
		t.Fatal(err)
	}
	proxy := privatedb.NewLossyProxy(t, srv.Addr())
	w, err := outbox.NewWriter(dialect, "")
	if err != nil {
		t.Fatal(err)
	}
	e := &dbEnv{dialect: dialect, dsn: srv.DSNVia(proxy.Addr()), db: db, w: w,
		table: map[string]string{outbox.Postgres: outbox.DefaultPostgresTable, outbox.MySQL: outbox.DefaultMySQLTable}[dialect]}
	return &privateOutbox{srv: srv, proxy: proxy, e: e}
}

// fresh gives the test a new source on an empty outbox table.
func (po *privateOutbox) fresh(t *testing.T) *dbEnv {
	t.Helper()
	if _, err := po.e.db.Exec(`DELETE FROM ` + po.e.table); err != nil {
		t.Fatal(err)
	}
	e := *po.e
	e.source = uniqueName(t, "src_")
	return &e
}

// killSession ends the session that holds the relay's lock, from a session of its own.
func (po *privateOutbox) killSession(t *testing.T, source string) {
	db := po.e.db
	if po.e.dialect == outbox.Postgres {
		// The relay is the only session on this server holding an advisory lock.
		var n int
		err := db.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted`).Scan(&n)
		if err != nil || n != 1 {
			t.Errorf("terminate the relay's session: %d sessions, %v", n, err)
		}
		return
	}
	var id sql.NullInt64
	if err := db.QueryRow(`SELECT IS_USED_LOCK(?)`, "imago.outbox/test/"+source).Scan(&id); err != nil || !id.Valid {
		t.Errorf("find the relay's session: %v (held: %v)", err, id.Valid)
		return
	}
	if _, err := db.Exec(fmt.Sprintf("KILL CONNECTION %d", id.Int64)); err != nil {
		t.Errorf("kill the relay's session: %v", err)
	}
}

// relayedTotal reads relayed_total of source's state row (0 when the server does not answer).
func (po *privateOutbox) relayedTotal(source string) int64 {
	q := `SELECT relayed_total FROM imago.outbox_relay WHERE source = $1`
	if po.e.dialect == outbox.MySQL {
		q = `SELECT relayed_total FROM imago_outbox_relay WHERE source = ?`
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	var n int64
	_ = po.e.db.QueryRowContext(ctx, q, source).Scan(&n)
	return n
}

// TestRelayDatabaseFaults kills the database (SIGKILL of the server) or the relay's session at
// each step of a relay round of the second batch: after the batch was read and its claim
// recorded, before its publish (the relay process goes too: a new one takes over); after the
// broker acknowledged the publish, before the completing transaction; and at that
// transaction's COMMIT (its answer lost while it commits, or the server killed right after
// it was sent). Once the database is back every row is in the topic exactly once, each key's
// messages in outbox order, the outbox empty; rows written after the restart follow (the ids
// go on after the crash, so no idempotency key is reused).
func TestRelayDatabaseFaults(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			po := newPrivateOutbox(t, d)
			for _, tc := range []struct {
				name   string
				step   string // before, after, commit
				server bool   // kill the server (else the session, or lose the COMMIT's answer)
			}{
				{"before-publish/server-killed", "before", true},
				{"before-publish/session-killed", "before", false},
				{"after-ack/server-killed", "after", true},
				{"after-ack/session-killed", "after", false},
				{"commit/answer-lost", "commit", false},
				{"commit/server-killed", "commit", true},
			} {
				t.Run(tc.name, func(t *testing.T) { testRelayFault(t, po, tc.step, tc.server) })
			}
		})
	}
}

func testRelayFault(t *testing.T, po *privateOutbox, step string, server bool) {
	e := po.fresh(t)
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 2)
	l := newLedger()
	ctx := context.Background()
	write := func(from, n int) {
		for i := from; i < from+n; i++ {
			key := fmt.Sprintf("k%d", i%3)
			if err := e.writeTx(ctx, topic, key, []int{i}, true); err != nil {
				t.Fatal(err)
			}
			l.add(key, []int{i}, true)
		}
	}
	write(0, 40)

	pub := &faultPublisher{b: b, at: 2}
	var faulted sync.WaitGroup // the fault happened (the test restarts the server after it)
	faulted.Add(1)
	fault := func() {
		defer faulted.Done()
		if server {
			po.srv.Kill()
		} else {
			po.killSession(t, e.source)
		}
	}
	replace := make(chan struct{}) // before: the relay dies with the database
	switch step {
	case "before":
		pub.before = func() bool { fault(); close(replace); return false }
	case "after":
		pub.after = fault
	case "commit":
		pub.after = func() {
			// The completing transaction of this batch is the relay's next COMMIT.
			want := pub.rows.Load()
			if server {
				po.proxy.Arm("COMMIT", fault)
			} else {
				po.proxy.Arm("COMMIT", func() {
					defer faulted.Done()
					privatedb.Until(func() bool { return po.relayedTotal(e.source) >= want })()
				})
			}
		}
	}
	opts := e.relayOptions()
	opts.BatchSize = 10
	opts.MaxPoll = 50 * time.Millisecond
	r, err := outbox.New(opts, pub)
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	defer func() { r.Close() }()
	if step == "before" {
		<-replace
		r.Close() // abandons the batch, as a crash would: its claim stays recorded
	}
	faulted.Wait()
	if server {
		po.srv.Start()
	}
	if step == "before" {
		if r, err = outbox.New(opts, pub); err != nil {
			t.Fatal(err)
		}
		r.Start()
	}
	if step == "commit" && po.proxy.Cuts() == 0 {
		t.Fatal("the proxy lost no COMMIT answer")
	}
	write(40, 10)
	waitFor(t, 30*time.Second, "the outbox to drain", func() bool { return po.rowsLeft(e) == 0 && pub.calls.Load() > 2 })
	l.check(t, fetchAllBroker(t, b, topic))
}

// rowsLeft counts the rows still in e's outbox (-1 when the server does not answer).
func (po *privateOutbox) rowsLeft(e *dbEnv) int {
	var n int
	if err := e.db.QueryRow(`SELECT COUNT(*) FROM ` + e.table).Scan(&n); err != nil {
		return -1
	}
	return n
}

// TestRelayWriterCommitAnswerLost: an application transaction writing an outbox row loses its
// COMMIT's answer (the connection cut once the row is committed), or the server is killed
// right after the COMMIT was sent (committed or not: the test looks after the restart). The
// application is told its commit failed; the relay publishes the row exactly once if it
// committed and never if not, and the rows around it as usual.
func TestRelayWriterCommitAnswerLost(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			po := newPrivateOutbox(t, d)
			for _, server := range []bool{false, true} {
				t.Run(map[bool]string{false: "answer-lost", true: "server-killed"}[server], func(t *testing.T) {
					testWriterCommitLost(t, po, server)
				})
			}
		})
	}
}

func testWriterCommitLost(t *testing.T, po *privateOutbox, server bool) {
	e := po.fresh(t)
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 2)
	l := newLedger()
	ctx := context.Background()
	write := func(e *dbEnv, from, n int) {
		for i := from; i < from+n; i++ {
			key := fmt.Sprintf("k%d", i%3)
			if err := e.writeTx(ctx, topic, key, []int{i}, true); err != nil {
				t.Fatal(err)
			}
			l.add(key, []int{i}, true)
		}
	}
	opts := e.relayOptions()
	opts.BatchSize = 10
	opts.MaxPoll = 50 * time.Millisecond
	pub := &faultPublisher{b: b}
	if !server { // with the server killed, the test looks for the row before a relay may take it
		startRelay(t, opts, pub)
	}
	write(e, 0, 20)

	// The writer's own path to the server, through a proxy of its own.
	wp := privatedb.NewLossyProxy(t, po.srv.Addr())
	wdb, err := sql.Open(po.srv.Driver(), po.srv.DSNVia(wp.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer wdb.Close()
	we := *e
	we.db = wdb
	const key, seq = "k-lost", 20
	// The row as the writer inserts it, found by its payload.
	found := func() bool {
		var n int
		_ = e.db.QueryRow(`SELECT COUNT(*) FROM `+e.table+` WHERE payload = `+map[string]string{outbox.Postgres: "$1", outbox.MySQL: "?"}[e.dialect],
			[]byte(fmt.Sprintf(`{"k":%q,"s":%d}`, key, seq))).Scan(&n)
		return n > 0
	}
	marker := map[string]string{outbox.Postgres: "commit", outbox.MySQL: "COMMIT"}[e.dialect]
	if server {
		wp.Arm(marker, po.srv.Kill)
	} else {
		wp.Arm(marker, privatedb.Until(func() bool { return found() || pub.rows.Load() > 20 }))
	}
	if err := we.writeTx(ctx, topic, key, []int{seq}, true); err == nil {
		t.Fatal("the writer's commit lost its answer, but the writer was told it committed")
	}
	if wp.Cuts() != 1 {
		t.Fatalf("the proxy lost %d answers, want 1", wp.Cuts())
	}
	if server {
		po.srv.Start()
		if found() {
			l.add(key, []int{seq}, true)
		}
		startRelay(t, opts, pub)
	} else {
		l.add(key, []int{seq}, true) // it committed: the proxy waited for it
	}
	write(e, 21, 10)
	waitFor(t, 30*time.Second, "the outbox to drain", func() bool { return po.rowsLeft(e) == 0 })
	l.check(t, fetchAllBroker(t, b, topic))
}
