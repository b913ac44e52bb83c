package xa

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/privatedb"
	"github.com/imagomq/imago/migrations"
)

// The decision table on a private PostgreSQL (internal/privatedb) the test can shut down or run
// out of disk: what a write that meets the server in those states tells its waiter.

// privateSQLLogDB is a private PostgreSQL as a decision-table database, with a pool that
// keeps no idle connection (each write after a failed one opens a new session).
func privateSQLLogDB(t *testing.T, opts ...privatedb.Option) (*privatedb.Server, sqlLogDB) {
	t.Helper()
	p := privatedb.Postgres(t, opts...)
	db := p.DB()
	db.SetMaxIdleConns(0)
	return p, sqlLogDB{dialect: migrations.Postgres, db: db, table: "imago.xa_decisions", dsn: p.DSN()}
}

// TestSQLDecisionLogServerRefusesConnections: a write that cannot open a session, because
// PostgreSQL refuses new connections while it starts, recovers from a crash (a PANIC for lack
// of disk) or shuts down (57P03 cannot_connect_now, sent before any statement), sent nothing:
// it is retried until the write timeout and answered as not written, and the log stays
// usable. It once counted as a write of unknown outcome (a server error of class 57), which
// failed the log until a restart and left the transaction in doubt.
func TestSQLDecisionLogServerRefusesConnections(t *testing.T) {
	p, d := privateSQLLogDB(t)
	ctx := context.Background()
	node := newNode(t)
	l, _ := openSQLLog(t, d, node, sqlLogOpts{writeTimeout: time.Second})
	if err := l.appendSync(ctx, nodeRecord(node, 1, StatusCommitting)); err != nil {
		t.Fatal(err)
	}
	// The writer loses its session between two writes (a write cancelled by the write
	// timeout, here behind a row lock): the next write opens a new one.
	release := blockRow(t, d, node, nodeRecord(node, 1, StatusCommitting).Gtrid)
	if err := l.appendSync(ctx, nodeRecord(node, 1, StatusCommitted)); !errors.Is(err, errNotWritten) {
		t.Fatalf("a write cancelled behind a row lock: %v, want %v", err, errNotWritten)
	}
	release()
	if l.conn != nil {
		t.Fatal("the writer kept its session after a failed write")
	}

	// A smart shutdown: the open session (hold) keeps the server up, new ones are refused.
	hold, err := d.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGTERM)
	waitFor(t, "PostgreSQL to refuse new connections", func() bool {
		db, err := sql.Open(p.Driver(), p.DSN())
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.Ping()
		return err != nil && strings.Contains(err.Error(), "57P03")
	})
	err = l.appendSync(ctx, nodeRecord(node, 2, StatusCommitting))
	if !errors.Is(err, errNotWritten) {
		t.Fatalf("a write refused at connection: %v, want %v (nothing was sent)", err, errNotWritten)
	}
	if err := l.failedErr(); err != nil {
		t.Fatalf("a write refused at connection failed the log: %v", err)
	}
	hold.Close()
	waitFor(t, "PostgreSQL to shut down", p.Exited)
	p.Start()
	if err := l.appendSync(ctx, nodeRecord(node, 3, StatusCommitting)); err != nil {
		t.Fatalf("a write once the server is back: %v", err)
	}
}
