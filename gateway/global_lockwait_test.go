package gateway

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
)

// A step that waits for a row lock another session holds ends at the transaction's timeout:
// 409 timed_out, nothing changed, and the rows its earlier steps locked are free again soon
// after the answer (a payment service retries the transfer at once, with a new id). The
// MariaDB session of the branch went on waiting for the server's lock wait timeout (50 s)
// after the answer, holding row A.
func TestGlobalTxTimeoutInLockWait(t *testing.T) {
	e := startGlobal(t, Options{})
	ctx := context.Background()
	blocker, err := e.my.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback()
	if _, err := blocker.ExecContext(ctx, "SELECT balance FROM "+e.wallet+" WHERE id = 'B' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	body := `{"id": "lw-1", "timeout_ms": 1000, "steps": [
		{"resource": "wallet", "operation": "debit", "params": {"account": "A", "amount": 10}},
		{"resource": "wallet", "operation": "credit", "params": {"account": "B", "amount": 10}}]}`
	began := time.Now()
	r := e.must(http.StatusConflict, "POST", "/v1/global-transactions", body)
	var res api.GlobalTxResult
	decodeJSON(t, r.body, &res)
	if res.Status != "rolled_back" || res.Error == nil || res.Error.Code != "timed_out" {
		t.Fatalf("a step in a lock wait past the timeout answered %s", r.body)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("answered after %s for a 1s timeout", d)
	}
	// Row A, which step 0 updated, must not stay locked by the branch the answer says
	// rolled back while the blocker goes on holding B.
	conn, err := e.my.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET SESSION innodb_lock_wait_timeout = 4"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "UPDATE "+e.wallet+" SET balance = balance WHERE id = 'A'"); err != nil {
		t.Errorf("row A still locked %s after the transaction answered rolled_back: %v", time.Since(began).Round(time.Second), err)
	}
	blocker.Rollback()
	if got, want := e.balances(), [4]int64{1000, 0, 1000, 0}; got != want {
		t.Fatalf("balances %v after a timed-out transfer, want %v", got, want)
	}
}

// The same on PostgreSQL, whose lock_timeout is 0 (no limit) by default: the branch's backend
// must not go on waiting for B after the answer, holding row A, nor prepare once it gets B.
// It does not: the driver sends a cancel request when the statement's context ends at the
// deadline. This guards that (a driver setting or a pool that dropped the connection without
// the cancel would leave the backend waiting as long as the blocker holds B).
func TestGlobalTxTimeoutInLockWaitPostgres(t *testing.T) {
	e := startGlobal(t, Options{})
	ctx := context.Background()
	blocker, err := e.pg.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback()
	if _, err := blocker.ExecContext(ctx, "SELECT balance FROM "+e.ledger+" WHERE id = 'B' FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	body := `{"id": "lw-pg-1", "timeout_ms": 1000, "steps": [
		{"resource": "ledger", "operation": "debit", "params": {"account": "A", "amount": 10}},
		{"resource": "ledger", "operation": "credit", "params": {"account": "B", "amount": 10}}]}`
	began := time.Now()
	r := e.must(http.StatusConflict, "POST", "/v1/global-transactions", body)
	var res api.GlobalTxResult
	decodeJSON(t, r.body, &res)
	if res.Error == nil || res.Error.Code != "timed_out" {
		t.Fatalf("a step in a lock wait past the timeout answered %s", r.body)
	}
	conn, err := e.pg.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET lock_timeout = '4s'"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "UPDATE "+e.ledger+" SET balance = balance WHERE id = 'A'"); err != nil {
		t.Errorf("row A still locked %s after the transaction answered %s: %v", time.Since(began).Round(time.Second), res.Status, err)
	}
	blocker.Rollback()
	// Nothing of the branch may be left prepared once the blocker is gone.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := e.pg.QueryRowContext(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database() AND prepared > $1", began).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d branches left prepared after a transaction answered %s", n, res.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, want := e.balances(), [4]int64{1000, 0, 1000, 0}; got != want {
		t.Fatalf("balances %v after a timed-out transfer, want %v", got, want)
	}
}
