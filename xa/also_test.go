package xa

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/imagomq/imago/internal/testenv"
)

// A bad frame followed by valid frames is not a torn tail (a crash only tears the end): it is
// corruption, and cutting there would drop the valid decisions after it (a commit decision
// among them, and recovery would then roll back a transaction that committed elsewhere). Open
// refuses, naming the file and the offset; the file is left as it is.
func TestDecisionLogRefusesCorruptionBeforeValidFrames(t *testing.T) {
	dir := t.TempDir()
	l, _, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := l.appendSync(context.Background(), sampleRecord(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.close()
	path := filepath.Join(dir, logFileName)
	b, _ := os.ReadFile(path)
	r0 := sampleRecord(0)
	first := len(appendRecord(nil, &r0))
	b[first+frameHeader+3] ^= 0xff // inside the second frame's payload
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	l, _, err = openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
	if err == nil {
		l.close()
		t.Fatal("opened a decision log whose middle frame is corrupt")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "offset "+strconv.Itoa(first)) {
		t.Fatalf("the error does not name the file and the offset %d: %v", first, err)
	}
	if after, _ := os.ReadFile(path); len(after) != len(b) {
		t.Fatalf("the file was cut from %d to %d bytes", len(b), len(after))
	}
}

// A PostgreSQL branch whose statements ended its transaction (a COMMIT run by the
// application's SQL) has nothing left to prepare: what it did was committed outside the
// global transaction. It must be refused at prepare (the transaction status must be T, in a
// transaction block), not voted read-only, so the global transaction rolls back.
func TestPostgresBranchEndedByCommitRefused(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	c := e.open(e.options(newNode(t)))
	in, err := c.Run(context.Background(), BeginOptions{ID: "ended-" + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
		w, err := tx.Enlist(ctx, "wallet")
		if err != nil {
			return err
		}
		if _, err := w.Exec(ctx, "UPDATE "+table+" SET balance = balance - 10 WHERE id = 'a'"); err != nil {
			return err
		}
		l, err := tx.Enlist(ctx, "ledger")
		if err != nil {
			return err
		}
		var bal int64
		if err := l.QueryRow(ctx, "UPDATE "+table+" SET balance = balance + 10 WHERE id = 'b' RETURNING balance", nil, &bal); err != nil {
			return err
		}
		rows, err := l.Query(ctx, "COMMIT")
		if err != nil {
			return err
		}
		return rows.Close()
	})
	if !errors.Is(err, ErrRolledBack) || in.Status != StatusRolledBack {
		t.Fatalf("a global transaction whose PostgreSQL branch ran COMMIT: %+v %v; want rolled_back", in, err)
	}
	if !strings.Contains(in.Message, "COMMIT") {
		t.Errorf("the reason does not say the branch's transaction ended: %s", in.Message)
	}
	if got := e.balance(e.my, table, "a"); got != 100 {
		t.Fatalf("wallet a = %d, want 100 (rolled back)", got)
	}
}

// cancelOnceConnector wraps the pgx driver: the first COMMIT PREPARED is answered as a
// cancelled statement (SQLSTATE 57014) without being run. A real cancel lands there only by
// a race with a statement that lasts a millisecond, so the fault is injected at the driver.
type cancelOnceConnector struct {
	driver.Connector
	fired *atomic.Bool
}

type cancelOnceConn struct {
	*stdlib.Conn
	fired *atomic.Bool
}

func (c cancelOnceConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &cancelOnceConn{Conn: conn.(*stdlib.Conn), fired: c.fired}, nil
}

func (c *cancelOnceConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if strings.HasPrefix(query, "COMMIT PREPARED") && c.fired.CompareAndSwap(false, true) {
		return nil, &pgconn.PgError{Severity: "ERROR", Code: "57014", Message: "canceling statement due to user request"}
	}
	return c.Conn.ExecContext(ctx, query, args)
}

// SQLSTATE 57014 (query_canceled) on COMMIT PREPARED means the statement did not run to its
// end: the branch is still prepared, and recovery commits it at its next try. It is not a
// heuristic rollback (which would mark the transaction in_doubt).
func TestCommitPreparedCanceledIsStillPrepared(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	o := e.options(node)
	o.Grace = time.Hour
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	c.hookAfterDecision = func(string) error { return errSimulatedCrash }
	id := "canceled-" + e.suffix
	if _, err := c.Run(context.Background(), BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 40, msg("xat."+e.suffix, "a", `{}`))
	}); !errors.Is(err, errSimulatedCrash) {
		t.Fatal(err)
	}
	c.Close()

	cfg, err := pgx.ParseConfig(testenv.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	var fired atomic.Bool
	pg := sql.OpenDB(cancelOnceConnector{Connector: stdlib.GetConnector(*cfg), fired: &fired})
	defer pg.Close()
	o.Resources[1] = Postgres("ledger", pg)
	c2 := e.open(o)
	cleanLeftovers(t, e, node)
	waitFor(t, "recovery to commit", func() bool {
		got, _ := c2.Get(id)
		if got.Status == StatusInDoubt {
			t.Fatalf("a cancelled COMMIT PREPARED made the transaction in_doubt: %+v", got)
		}
		return got.Status == StatusCommitted
	})
	if !fired.Load() {
		t.Fatal("the fault never fired")
	}
	if e.balance(e.pg, table, "b") != 40 || len(e.prepared(node)) != 0 {
		t.Fatal("the ledger branch was not committed")
	}
}

// Client ids and generated gtrids are two namespaces: a client id that happens to be another
// transaction's gtrid must not be answered as a repeat of that transaction (the caller would
// believe its payment ran when it never did).
func TestClientIDIsNotAGtrid(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100})
	c := e.open(e.options(newNode(t)))
	ctx := context.Background()
	first, err := c.Run(ctx, BeginOptions{}, func(ctx context.Context, tx *GlobalTx) error {
		w, err := tx.Enlist(ctx, "wallet")
		if err != nil {
			return err
		}
		_, err = w.Exec(ctx, "UPDATE "+table+" SET balance = balance - 10 WHERE id = 'a'")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ran := false
	in, err := c.Run(ctx, BeginOptions{ID: first.Gtrid}, func(ctx context.Context, tx *GlobalTx) error {
		ran = true
		return nil
	})
	var dup *DuplicateError
	if errors.As(err, &dup) {
		t.Fatalf("a client id equal to another transaction's gtrid was answered as its repeat: %+v", in)
	}
	if err == nil && !ran {
		t.Fatal("the transaction neither ran nor was refused")
	}
	if got, _ := c.Get(first.Gtrid); got.Gtrid != first.Gtrid {
		t.Fatalf("Get of the first gtrid returns another transaction: %+v", got)
	}
}
