package xa

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
)

// A combined "XA END; XA PREPARE" that fails leaves it unknown whether the branch ended;
// rollback must still roll it back. Here the branch was already ended (IDLE), so the
// combined text fails on XA END with XAER_RMFAIL.
func TestMySQLCombinedPrepareFailureRollsBack(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 10})
	ctx := context.Background()
	rm := MySQL("wallet", e.my).rm()
	xid := makeXid(newNode(t)+uniq(t)+uniq(t), "wallet")
	bc, err := rm.start(ctx, xid, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.release(false)
	if !bc.(*mysqlBranch).multi {
		t.Fatal("a connection of OpenMySQLDB does not take the combined XA END; XA PREPARE")
	}
	if _, err := bc.exec(ctx, "UPDATE "+table+" SET balance = 0 WHERE id = ?", []any{"a"}); err != nil {
		t.Fatal(err)
	}
	conn, _ := bc.db(ctx)
	if _, err := conn.ExecContext(ctx, "XA END "+mysqlXid(xid)); err != nil {
		t.Fatal(err)
	}
	if _, err := bc.prepare(ctx); err == nil || mysqlErrNumber(err) != 1399 {
		t.Fatalf("prepare of an ended branch: %v, want XAER_RMFAIL (1399)", err)
	}
	if err := bc.rollback(ctx); err != nil {
		t.Fatalf("rollback after a failed combined prepare: %v", err)
	}
	if got := e.balance(e.my, table, "a"); got != 10 {
		t.Fatalf("balance %d after rollback, want 10", got)
	}
	xids, err := rm.recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range xids {
		if string(x.Gtrid) == string(xid.Gtrid) {
			t.Fatal("the branch is still prepared")
		}
	}
}

// A pool opened with plain sql.Open (no statement cache, no multi-statement text) works too:
// XA END and XA PREPARE go separately.
func TestPlainMySQLPool(t *testing.T) {
	e := newEnv(t)
	plain, err := sql.Open("mysql", testenv.MySQLDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	e.my = plain
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	c := e.open(e.options(newNode(t)))
	ctx := context.Background()
	topic := "xat." + e.suffix
	in, err := c.Run(ctx, BeginOptions{}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 30, msg(topic, "a", `{}`))
	})
	if err != nil || in.Status != StatusCommitted {
		t.Fatalf("outcome %+v %v", in, err)
	}
	_, err = c.Run(ctx, BeginOptions{}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 1000, msg(topic, "a", `{}`))
	})
	if !errors.Is(err, ErrRolledBack) {
		t.Fatalf("insufficient funds: %v", err)
	}
	if e.balance(e.my, table, "a") != 70 || e.balance(e.pg, table, "b") != 30 || len(e.messages(topic)) != 1 {
		t.Fatal("wrong balances or messages")
	}
}

// PostgreSQL's BEGIN travels with the branch's first statement. A branch that ran nothing has
// no transaction; a first statement that fails leaves an aborted transaction that votes
// rollback; a query first begins the transaction too, so a later write is rolled back with it.
func TestPostgresLazyBegin(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 10})
	ctx := context.Background()
	rm := Postgres("ledger", e.pg).rm()
	node := newNode(t)

	// Nothing ran: rdonly, and no transaction was opened on the server.
	bc, err := rm.start(ctx, makeXid(node+uniq(t)+uniq(t), "ledger"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ro, err := bc.prepare(ctx); err != nil || !ro {
		t.Fatalf("empty branch: rdonly=%v %v", ro, err)
	}
	if st := bc.(*pgBranch).txStatus(); st != 'I' {
		t.Fatalf("empty branch left the session in state %q, want idle", st)
	}
	bc.release(false)

	// The first statement fails: the error comes back, the branch votes rollback.
	bc, err = rm.start(ctx, makeXid(node+uniq(t)+uniq(t), "ledger"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bc.exec(ctx, "UPDATE "+table+" SET balance = balance / $1 WHERE id = $2", []any{0, "a"}); err == nil {
		t.Fatal("division by zero accepted")
	}
	if _, err := bc.prepare(ctx); XACode(err) != XARBRollback {
		t.Fatalf("prepare after a failed statement: %v, want %s", err, XARBRollback)
	}
	if err := bc.rollback(ctx); err != nil {
		t.Fatal(err)
	}
	bc.release(false)

	// A query first, then a write, then rollback: the write is undone.
	bc, err = rm.start(ctx, makeXid(node+uniq(t)+uniq(t), "ledger"), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := bc.db(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var bal int64
	if err := conn.QueryRowContext(ctx, "SELECT balance FROM "+table+" WHERE id = $1", "a").Scan(&bal); err != nil || bal != 10 {
		t.Fatalf("query: %d %v", bal, err)
	}
	if n, err := bc.exec(ctx, "UPDATE "+table+" SET balance = 0 WHERE id = $1", []any{"a"}); err != nil || n != 1 {
		t.Fatalf("exec: %d %v", n, err)
	}
	if err := bc.rollback(ctx); err != nil {
		t.Fatal(err)
	}
	bc.release(false)
	if got := e.balance(e.pg, table, "a"); got != 10 {
		t.Fatalf("balance %d after rollback, want 10", got)
	}

	// The pipelined first statement prepares and commits.
	xid := makeXid(node+uniq(t)+uniq(t), "ledger")
	bc, err = rm.start(ctx, xid, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := bc.exec(ctx, "UPDATE "+table+" SET balance = balance + $1 WHERE id = $2", []any{5, "a"}); err != nil || n != 1 {
		t.Fatalf("exec: %d %v", n, err)
	}
	if ro, err := bc.prepare(ctx); err != nil || ro {
		t.Fatalf("prepare: rdonly=%v %v", ro, err)
	}
	if _, err := bc.commit(ctx, false); err != nil {
		t.Fatal(err)
	}
	bc.release(false)
	if got := e.balance(e.pg, table, "a"); got != 15 {
		t.Fatalf("balance %d after commit, want 15", got)
	}
}
