package testenv_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/go-zookeeper/zk"
	"github.com/jackc/pgx/v5"

	"github.com/imagomq/imago/internal/testenv"
)

// uniqueID returns a prefix followed by 16 random hex digits: only letters and
// digits, so it is safe to splice into SQL text (XA ids and PostgreSQL gids
// cannot be bind parameters).
func uniqueID(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

func TestMariaDB(t *testing.T) {
	dsn := testenv.MySQLDSN(t)
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("parse %s: %v", testenv.EnvMySQLDSN, err)
	}
	cfg.Timeout = 5 * time.Second
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	t.Cleanup(func() { db.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatalf("connect to MariaDB (%s): %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close() })

	var version string
	if err := conn.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		t.Fatalf("SELECT VERSION(): %v", err)
	}
	t.Logf("MariaDB %s", version)

	// A table of our own, so the XA branch has a write to prepare and to roll back.
	table := uniqueID(t, "testenv_xa_")
	if _, err := conn.ExecContext(ctx, "CREATE TABLE "+table+" (id VARCHAR(64) PRIMARY KEY) ENGINE=InnoDB"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if _, err := db.ExecContext(cctx, "DROP TABLE IF EXISTS "+table); err != nil {
			t.Errorf("drop table %s: %v", table, err)
		}
	})

	xid := uniqueID(t, "imagotestenv")
	quoted := "'" + xid + "'"
	// Registered after the table's cleanup, so it runs first: never leave a prepared
	// branch behind (it would survive the connection and hold its locks).
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if found, _ := xaRecovered(cctx, db, xid); found {
			if _, err := db.ExecContext(cctx, "XA ROLLBACK "+quoted); err != nil {
				t.Errorf("cleanup: XA ROLLBACK %s: %v", xid, err)
			}
		}
	})

	for _, stmt := range []string{
		"XA START " + quoted,
		"INSERT INTO " + table + " (id) VALUES (" + quoted + ")",
		"XA END " + quoted,
		"XA PREPARE " + quoted,
	} {
		if _, err := conn.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	found, err := xaRecovered(ctx, conn, xid)
	if err != nil {
		t.Fatalf("XA RECOVER: %v", err)
	}
	if !found {
		t.Fatalf("XA RECOVER does not list the prepared branch %s", xid)
	}
	if _, err := conn.ExecContext(ctx, "XA ROLLBACK "+quoted); err != nil {
		t.Fatalf("XA ROLLBACK: %v", err)
	}
	if found, err := xaRecovered(ctx, conn, xid); err != nil || found {
		t.Fatalf("after XA ROLLBACK: XA RECOVER lists %s: %v (err %v)", xid, found, err)
	}
	var n int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	if n != 0 {
		t.Fatalf("the rolled-back XA branch left %d row(s) in %s", n, table)
	}
}

// queryer is what *sql.DB and *sql.Conn have in common.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// xaRecovered reports whether XA RECOVER lists the branch with gtrid xid (empty bqual).
func xaRecovered(ctx context.Context, q queryer, xid string) (bool, error) {
	rows, err := q.QueryContext(ctx, "XA RECOVER")
	if err != nil {
		return false, err
	}
	defer rows.Close()
	found := false
	for rows.Next() {
		var formatID, gtridLen, bqualLen int64
		var data []byte
		if err := rows.Scan(&formatID, &gtridLen, &bqualLen, &data); err != nil {
			return false, err
		}
		if string(data) == xid && bqualLen == 0 {
			found = true
		}
	}
	return found, rows.Err()
}

func TestPostgreSQL(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse %s: %v", testenv.EnvPostgresDSN, err)
	}
	cfg.ConnectTimeout = 5 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect to PostgreSQL (%s): %v", dsn, err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		conn.Close(cctx)
	})

	var version, maxPrepared string
	if err := conn.QueryRow(ctx, "SHOW server_version").Scan(&version); err != nil {
		t.Fatalf("SHOW server_version: %v", err)
	}
	if err := conn.QueryRow(ctx, "SHOW max_prepared_transactions").Scan(&maxPrepared); err != nil {
		t.Fatalf("SHOW max_prepared_transactions: %v", err)
	}
	t.Logf("PostgreSQL %s, max_prepared_transactions %s", version, maxPrepared)
	if n, err := strconv.Atoi(maxPrepared); err != nil || n < 64 {
		t.Fatalf("max_prepared_transactions = %q, want >= 64 (scripts/services.sh sets it)", maxPrepared)
	}

	// PREPARE TRANSACTION takes the gid only as literal SQL text.
	gid := uniqueID(t, "imagotestenv")
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		if found, _ := pgPrepared(cctx, conn, gid); found {
			if _, err := conn.Exec(cctx, "ROLLBACK PREPARED '"+gid+"'"); err != nil {
				t.Errorf("cleanup: ROLLBACK PREPARED %s: %v", gid, err)
			}
		}
	})
	for _, stmt := range []string{
		"BEGIN",
		"SELECT pg_current_xact_id()", // give the transaction an xid, as a write would
		"PREPARE TRANSACTION '" + gid + "'",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	found, err := pgPrepared(ctx, conn, gid)
	if err != nil {
		t.Fatalf("query pg_prepared_xacts: %v", err)
	}
	if !found {
		t.Fatalf("pg_prepared_xacts does not list %s", gid)
	}
	if _, err := conn.Exec(ctx, "ROLLBACK PREPARED '"+gid+"'"); err != nil {
		t.Fatalf("ROLLBACK PREPARED: %v", err)
	}
	if found, err := pgPrepared(ctx, conn, gid); err != nil || found {
		t.Fatalf("after ROLLBACK PREPARED: pg_prepared_xacts lists %s: %v (err %v)", gid, found, err)
	}
}

func pgPrepared(ctx context.Context, conn *pgx.Conn, gid string) (bool, error) {
	var n int
	err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE gid = $1", gid).Scan(&n)
	return n > 0, err
}

func TestZooKeeper(t *testing.T) {
	servers := testenv.ZooKeeperServers(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	conn, events, err := zk.Connect(servers, 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatalf("connect to ZooKeeper %v: %v", servers, err)
	}
	t.Cleanup(conn.Close)
	for conn.State() != zk.StateHasSession {
		select {
		case ev := <-events:
			if ev.Err != nil {
				t.Logf("zookeeper event: %v", ev)
			}
		case <-ctx.Done():
			t.Fatalf("no ZooKeeper session with %v: state %v: %v", servers, conn.State(), ctx.Err())
		}
	}

	// Operations are bounded by the session timeout; run them under ctx as well.
	path := uniqueID(t, "/imago_testenv_")
	done := make(chan error, 1)
	go func() { done <- zkRoundTrip(conn, path) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatalf("ZooKeeper round trip: %v", ctx.Err())
	}
}

// zkRoundTrip creates an ephemeral znode at path, reads it back and deletes it.
func zkRoundTrip(conn *zk.Conn, path string) error {
	data := []byte("imago testenv " + path)
	created, err := conn.Create(path, data, zk.FlagEphemeral, zk.WorldACL(zk.PermAll))
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	got, stat, err := conn.Get(created)
	if err != nil {
		return fmt.Errorf("get %s: %w", created, err)
	}
	if string(got) != string(data) {
		return fmt.Errorf("get %s = %q, want %q", created, got, data)
	}
	if stat.EphemeralOwner != conn.SessionID() {
		return fmt.Errorf("%s: ephemeral owner %#x, want our session %#x", created, stat.EphemeralOwner, conn.SessionID())
	}
	if err := conn.Delete(created, stat.Version); err != nil {
		return fmt.Errorf("delete %s: %w", created, err)
	}
	if _, _, err := conn.Get(created); !errors.Is(err, zk.ErrNoNode) {
		return fmt.Errorf("get %s after delete: err = %v, want %v", created, err, zk.ErrNoNode)
	}
	return nil
}
