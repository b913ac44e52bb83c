package outbox_test

import (
	"context"
	"database/sql"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/outbox"
)

// lockNameSQL is how docs/outbox.md tells an operator to compute a source's GET_LOCK name in
// the application's database; ? is the source name.
const lockNameSQL = `SELECT CONCAT('imago.outbox/', IF(LENGTH(k) <= 51, k, LEFT(SHA2(k, 256), 40)))
	FROM (SELECT CONCAT(DATABASE(), '/', ?) AS k) x`

// TestMySQLLockIsPerDatabase: a MySQL/MariaDB relay's lock is its source's in its own
// database. GET_LOCK names are server-wide, so two outboxes under one source name in two
// databases of one server (two deployments sharing the server) would otherwise share one lock
// and one of them would never be relayed; each gets its relay and each row reaches its topic.
// The second database's name is long enough for the lock name to be hashed; both relays hold
// the name docs/outbox.md tells an operator to look for.
func TestMySQLLockIsPerDatabase(t *testing.T) {
	ctx := context.Background()
	e1 := newDBEnv(t, outbox.MySQL)
	db2name := uniqueName(t, "lock_scope_"+strings.Repeat("x", 30)+"_")
	if _, err := e1.db.ExecContext(ctx, "CREATE DATABASE "+db2name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = e1.db.ExecContext(context.Background(), "DROP DATABASE "+db2name) })
	dsn2 := strings.Replace(e1.dsn, "/test", "/"+db2name, 1)
	if dsn2 == e1.dsn {
		t.Fatalf("the test DSN names no database test: %s", e1.dsn)
	}
	db2, err := sql.Open("mysql", dsn2)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if err := migrations.ApplyOutbox(ctx, db2, outbox.MySQL); err != nil {
		t.Fatal(err)
	}
	// Two topics: the idempotency keys hold the source name and row ids, so two sources of
	// one name must not publish into one topic of one broker (docs/outbox.md).
	topics := []string{uniqueName(t, "t."), uniqueName(t, "t.")}
	b := openBroker(t, topics[0], 1)
	if _, err := b.CreateTopic(topics[1], broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	w2, err := outbox.NewWriter(outbox.MySQL, "")
	if err != nil {
		t.Fatal(err)
	}
	envs := []struct {
		db *sql.DB
		w  *outbox.Writer
	}{{e1.db, e1.w}, {db2, w2}}
	for i, x := range envs {
		tx, err := x.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := x.w.Write(ctx, tx, outbox.Message{Topic: topics[i], Payload: []byte(topics[i])}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	r1 := startRelay(t, e1.relayOptions(), outbox.BrokerPublisher{B: b})
	o2 := outbox.Options{Name: e1.source, Dialect: outbox.MySQL, DSN: dsn2, LockRetry: 50 * time.Millisecond}
	t.Cleanup(func() {
		_, _ = db2.ExecContext(context.Background(), `DELETE FROM imago_outbox_relay WHERE source = ?`, e1.source)
	})
	r2 := startRelay(t, o2, outbox.BrokerPublisher{B: b})
	waitFor(t, 20*time.Second, "both relays to relay their database's row", func() bool {
		return r1.Status().RelayedTotal == 1 && r2.Status().RelayedTotal == 1
	})
	for i, x := range envs {
		var name string
		if err := x.db.QueryRowContext(ctx, lockNameSQL, e1.source).Scan(&name); err != nil {
			t.Fatal(err)
		}
		if hashed := i == 1; len(name) > 64 || strings.Contains(name, e1.source) == hashed {
			t.Errorf("database %d: lock name %q: want at most 64 characters, hashed: %v", i+1, name, hashed)
		}
		var holder sql.NullInt64
		if err := x.db.QueryRowContext(ctx, `SELECT IS_USED_LOCK(?)`, name).Scan(&holder); err != nil {
			t.Fatal(err)
		}
		if !holder.Valid {
			t.Errorf("database %d: no session holds %q, the lock name docs/outbox.md gives", i+1, name)
		}
		var values []string
		for _, m := range fetchMessages(t, b, topics[i]) {
			values = append(values, string(m.Value))
		}
		if len(values) != 1 || values[0] != topics[i] {
			t.Errorf("the topic of database %d holds %q, want one message %q", i+1, values, topics[i])
		}
	}
}

// TestMySQLLockExcludesEarlierRelays: relays of earlier versions locked
// "imago.outbox/<source>" (no database in it). A relay waits while a session of its own
// database holds that name, an older relay of the same outbox, and takes over once it is
// gone; then it holds the old name too, so that an older relay started later waits. During a
// rolling upgrade an older and a newer relay of one outbox thus never run together.
func TestMySQLLockExcludesEarlierRelays(t *testing.T) {
	ctx := context.Background()
	e := newDBEnv(t, outbox.MySQL)
	legacy := "imago.outbox/" + e.source
	older, err := sql.Open("mysql", e.dsn) // the older relay's session
	if err != nil {
		t.Fatal(err)
	}
	defer older.Close()
	older.SetMaxOpenConns(1)
	var got int
	if err := older.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, legacy).Scan(&got); err != nil || got != 1 {
		t.Fatalf("take %s as an older relay would: %d, %v", legacy, got, err)
	}
	topic := uniqueName(t, "t.")
	b := openBroker(t, topic, 1)
	if err := e.writeTx(ctx, topic, "k", []int{1}, true); err != nil {
		t.Fatal(err)
	}
	logs := &logBuf{}
	opts := e.relayOptions()
	opts.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
	waitFor(t, 20*time.Second, "the relay to report the older relay", func() bool { return logs.has("lock of relays of an earlier version") })
	if st := r.Status(); st.Active || st.RelayedTotal != 0 {
		t.Fatalf("the relay runs beside an older relay of its outbox: %+v", st)
	}
	if err := older.Close(); err != nil { // the older relay stops: its session ends, and its lock with it
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the relay to take over", func() bool { return r.Status().RelayedTotal == 1 })
	var holder sql.NullInt64
	if err := e.db.QueryRowContext(ctx, `SELECT IS_USED_LOCK(?)`, legacy).Scan(&holder); err != nil {
		t.Fatal(err)
	}
	if !holder.Valid {
		t.Fatalf("the active relay does not hold %s: an older relay started now would run beside it", legacy)
	}
}
