package xa

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
)

// env is a test's MariaDB and PostgreSQL databases, a broker and unique table names.
type env struct {
	t      *testing.T
	my, pg *sql.DB
	b      *broker.Broker
	dir    string
	suffix string
}

func uniq(t testing.TB) string {
	t.Helper()
	var raw [6]byte
	if _, err := rand.Read(raw[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(raw[:])
}

func quietLogger() *slog.Logger {
	if os.Getenv("IMAGO_XA_VERBOSE") == "1" {
		return slog.Default()
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// openQuietBroker opens a broker on dir with the tests' quiet logger; set, when not nil,
// adjusts the options first. The broker is closed when the test ends (closing it earlier, to
// reopen it, is fine: Close is safe to repeat).
func openQuietBroker(t testing.TB, dir string, set func(*broker.Options)) *broker.Broker {
	t.Helper()
	o := broker.NewOptions(dir)
	o.Logger = quietLogger()
	if set != nil {
		set(&o)
	}
	b, err := broker.Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func newEnv(t *testing.T) *env {
	t.Helper()
	myDSN, pgDSN := testenv.MySQLDSN(t), testenv.PostgresDSN(t)
	e := &env{t: t, dir: t.TempDir(), suffix: uniq(t)}
	var err error
	// As serve opens it: prepared statements kept per connection, END and PREPARE in one
	// round trip. TestPlainMySQLPool covers a pool opened with sql.Open.
	if e.my, err = OpenMySQLDB(myDSN); err != nil {
		t.Fatal(err)
	}
	if e.pg, err = sql.Open("pgx", pgDSN); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.my.Close(); e.pg.Close() })
	e.b = openQuietBroker(t, e.dir+"/broker", nil)
	return e
}

// table creates "<name>_<suffix>" in both databases with (id, balance) rows and drops it at
// the end of the test.
func (e *env) tables(rows map[string]int64) string {
	e.t.Helper()
	name := "xat_" + e.suffix
	ctx := context.Background()
	if _, err := e.my.ExecContext(ctx, "CREATE TABLE "+name+" (id VARCHAR(64) PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB"); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.pg.ExecContext(ctx, "CREATE TABLE "+name+" (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)"); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		e.my.Exec("DROP TABLE IF EXISTS " + name)
		e.pg.Exec("DROP TABLE IF EXISTS " + name)
	})
	for id, bal := range rows {
		if _, err := e.my.ExecContext(ctx, "INSERT INTO "+name+" VALUES (?, ?)", id, bal); err != nil {
			e.t.Fatal(err)
		}
		if _, err := e.pg.ExecContext(ctx, "INSERT INTO "+name+" VALUES ($1, $2)", id, bal); err != nil {
			e.t.Fatal(err)
		}
	}
	if _, err := e.b.CreateTopic("xat."+e.suffix, broker.TopicConfig{Partitions: 1}); err != nil {
		e.t.Fatal(err)
	}
	return name
}

func (e *env) options(node string) Options {
	o := NewOptions(e.dir + "/coord")
	o.NodeID = node
	o.Resources = []Resource{MySQL("wallet", e.my), Postgres("ledger", e.pg), Broker("broker", e.b)}
	o.Grace = time.Second
	o.RecoveryInterval = 100 * time.Millisecond
	o.Logger = quietLogger()
	return o
}

func (e *env) open(o Options) *Coordinator {
	e.t.Helper()
	c, err := Open(context.Background(), o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func (e *env) balance(db *sql.DB, table, id string) int64 {
	e.t.Helper()
	q := "SELECT balance FROM " + table + " WHERE id = ?"
	if db == e.pg {
		q = "SELECT balance FROM " + table + " WHERE id = $1"
	}
	var v int64
	if err := db.QueryRow(q, id).Scan(&v); err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *env) messages(topic string) []broker.FetchedMessage {
	e.t.Helper()
	res, err := e.b.Fetch(context.Background(), topic, 0, broker.FetchOptions{Offset: 0, MaxMessages: 10000})
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Messages
}

// prepared lists the prepared branches of node in both databases and the broker.
func (e *env) prepared(node string) []string {
	e.t.Helper()
	var out []string
	for _, r := range []Resource{MySQL("wallet", e.my), Postgres("ledger", e.pg), Broker("broker", e.b)} {
		xids, err := r.rm().recover(context.Background())
		if err != nil {
			e.t.Fatal(err)
		}
		for _, x := range xids {
			if _, n, _, _ := parseXid(x); n == node {
				out = append(out, r.Name()+":"+string(x.Gtrid))
			}
		}
	}
	return out
}

// waitFor polls cond until it holds or 30s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newNode(t testing.TB) string { return uniq(t) + "0000" }

// rollbackLeftovers rolls back, at the end of the test (before its tables are dropped: a
// prepared branch's locks would hold the DROP TABLE forever), whatever node left prepared on
// resources after a failure.
func (e *env) rollbackLeftovers(node string, resources []Resource) {
	e.t.Cleanup(func() {
		for _, r := range resources {
			xids, err := r.rm().recover(context.Background())
			if err != nil {
				continue
			}
			for _, x := range xids {
				if _, n, _, _ := parseXid(x); n == node {
					e.t.Logf("rolling back a leftover branch %s", x.Bqual)
					r.rm().rollback(context.Background(), x)
				}
			}
		}
	})
}

// transferApplied checks the fault tests' transfer of 40 (wallet a 100 → 60, ledger b 0 → 40,
// one message on topic) is applied everywhere when want is committed, nowhere when rolled back.
func (e *env) transferApplied(t *testing.T, table, topic string, want Status) {
	t.Helper()
	a, b, m := e.balance(e.my, table, "a"), e.balance(e.pg, table, "b"), len(e.messages(topic))
	if want == StatusCommitted && (a != 60 || b != 40 || m != 1) || want == StatusRolledBack && (a != 100 || b != 0 || m != 0) {
		t.Fatalf("%s: wallet a=%d, ledger b=%d, %d messages", want, a, b, m)
	}
}
