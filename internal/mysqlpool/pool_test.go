package mysqlpool

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/imagomq/imago/internal/testenv"
)

func openTest(t *testing.T) (*sql.DB, string) {
	t.Helper()
	cfg, err := mysql.ParseDSN(testenv.MySQLDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	db, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	table := fmt.Sprintf("mysqlpool_%d", time.Now().UnixNano())
	if _, err := db.Exec("CREATE TABLE " + table + " (id VARCHAR(64) PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Exec("DROP TABLE IF EXISTS " + table) })
	if _, err := db.Exec("INSERT INTO " + table + " VALUES ('a', 0)"); err != nil {
		t.Fatal(err)
	}
	return db, table
}

// sessionStatus reads a counter of the connection's own session.
func sessionStatus(t *testing.T, conn *sql.Conn, name string) int64 {
	t.Helper()
	var n string
	var v int64
	if err := conn.QueryRowContext(context.Background(), "SHOW SESSION STATUS LIKE '"+name+"'").Scan(&n, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// A connection of Open prepares a statement with arguments once and executes it from
// then on (go-sql-driver alone prepares and closes it every time); the parameters stay bound.
func TestMySQLConnKeepsPreparedStatements(t *testing.T) {
	db, table := openTest(t)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := sessionStatus(t, conn, "Com_stmt_prepare")
	for i := range 20 {
		res, err := conn.ExecContext(ctx, "UPDATE "+table+" SET balance = balance + ? WHERE id = ?", 1, "a")
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			t.Fatalf("exec %d affected %d rows", i, n)
		}
	}
	// A value that would break a spliced string is only data.
	if _, err := conn.ExecContext(ctx, "UPDATE "+table+" SET balance = balance + ? WHERE id = ?", 1, "a' OR '1'='1"); err != nil {
		t.Fatal(err)
	}
	var bal int64
	if err := conn.QueryRowContext(ctx, "SELECT balance FROM "+table+" WHERE id = ?", "a").Scan(&bal); err != nil || bal != 20 {
		t.Fatalf("balance %d, %v; want 20", bal, err)
	}
	if got := sessionStatus(t, conn, "Com_stmt_prepare") - before; got != 2 {
		t.Fatalf("%d statements prepared for 22 executions of 2 statements, want 2", got)
	}
	// A server error leaves the statement usable.
	if _, err := conn.ExecContext(ctx, "INSERT INTO "+table+" VALUES (?, ?)", "a", 1); err == nil {
		t.Fatal("duplicate key accepted")
	}
	if _, err := conn.ExecContext(ctx, "INSERT INTO "+table+" VALUES (?, ?)", "b", 1); err != nil {
		t.Fatal(err)
	}
}

// The cache is bounded: the least recently used statement is closed on the server.
func TestMySQLConnEvictsStatements(t *testing.T) {
	db, _ := openTest(t)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	closed := sessionStatus(t, conn, "Com_stmt_close")
	for i := range CacheSize + 5 {
		var v int
		if err := conn.QueryRowContext(ctx, fmt.Sprintf("SELECT ? + %d", i), 1).Scan(&v); err != nil || v != i+1 {
			t.Fatalf("query %d: %d %v", i, v, err)
		}
	}
	if got := sessionStatus(t, conn, "Com_stmt_close") - closed; got != 5 {
		t.Fatalf("%d statements closed after %d distinct ones, want 5", got, CacheSize+5)
	}
}

// A statement whose context ends is stopped (its session closed, as go-sql-driver's own cancel
// does) and fails with the context's error; the connection is discarded, and the pool goes on
// with a new one. Both paths: a text statement and a kept prepared one.
func TestMySQLConnContextEndsStatement(t *testing.T) {
	db, _ := openTest(t)
	for _, tc := range []struct {
		name  string
		query string
		args  []any
	}{
		{"text", "DO SLEEP(30)", nil},
		{"prepared", "DO SLEEP(?)", []any{30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bg := context.Background()
			conn, err := db.Conn(bg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var id int64
			if err := conn.QueryRowContext(bg, "SELECT CONNECTION_ID()").Scan(&id); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
			defer cancel()
			began := time.Now()
			_, err = conn.ExecContext(ctx, tc.query, tc.args...)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("statement past its deadline: err %v, want context.DeadlineExceeded", err)
			}
			if d := time.Since(began); d > 10*time.Second {
				t.Fatalf("statement past its deadline returned after %v", d)
			}
			if _, err := conn.ExecContext(bg, "DO 1"); !errors.Is(err, driver.ErrBadConn) {
				t.Fatalf("next statement on the stopped connection: err %v, want driver.ErrBadConn", err)
			}
			// The server ends the session (its socket is closed).
			deadline := time.Now().Add(10 * time.Second)
			for {
				var n int
				if err := db.QueryRowContext(bg, "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?", id).Scan(&n); err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("session %d still on the server after its statement's context ended", id)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := db.ExecContext(bg, "DO ?", 1); err != nil {
				t.Fatalf("pool after a stopped connection: %v", err)
			}
		})
	}
}

// A statement that ends before its context does leaves the connection in use.
func TestMySQLConnContextOutlivesStatement(t *testing.T) {
	db, table := openTest(t)
	bg := context.Background()
	conn, err := db.Conn(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var id0, id1 int64
	if err := conn.QueryRowContext(bg, "SELECT CONNECTION_ID()").Scan(&id0); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		ctx, cancel := context.WithTimeout(bg, time.Minute)
		_, err := conn.ExecContext(ctx, "UPDATE "+table+" SET balance = balance + ? WHERE id = ?", 1, "a")
		cancel()
		if err != nil {
			t.Fatalf("update %d: %v", i, err)
		}
	}
	if err := conn.QueryRowContext(bg, "SELECT CONNECTION_ID()").Scan(&id1); err != nil {
		t.Fatal(err)
	}
	if id0 != id1 {
		t.Fatalf("session %d replaced by %d", id0, id1)
	}
}
