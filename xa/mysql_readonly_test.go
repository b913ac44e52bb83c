package xa

import (
	"context"
	"database/sql/driver"
	"errors"
	"testing"
	"time"
)

// walletTransfer moves 40 from the wallet's a (resource wallet) to the ledger's b, with a
// message. With checkOnly the wallet side only reads (SELECT … FOR UPDATE: the funds are
// checked, nothing changes there).
func walletTransfer(ctx context.Context, tx *GlobalTx, wallet, table, topic string, checkOnly bool) error {
	w, err := tx.Enlist(ctx, wallet)
	if err != nil {
		return err
	}
	if checkOnly {
		var bal int64
		err = w.QueryRow(ctx, "SELECT balance FROM "+table+" WHERE id = ? FOR UPDATE", []any{"a"}, &bal)
	} else {
		_, err = w.Exec(ctx, "UPDATE "+table+" SET balance = balance - 40 WHERE id = ?", "a")
	}
	if err != nil {
		return err
	}
	l, err := tx.Enlist(ctx, "ledger")
	if err != nil {
		return err
	}
	if _, err := l.Exec(ctx, "UPDATE "+table+" SET balance = balance + $1 WHERE id = $2", 40, "b"); err != nil {
		return err
	}
	return tx.Publish(ctx, msg(topic, "a", `{}`))
}

// A MariaDB branch that only read votes read-only at prepare: MariaDB 10.11 accepts XA
// PREPARE of such a branch, lists it in XA RECOVER, but once its session is gone answers
// XA COMMIT with XA_RBROLLBACK (1402), which recovery would have to read as a heuristic
// rollback. Here the coordinator "crashes" after the decision and a new one recovers.
func TestMariaDBReadOnlyBranchAfterCrash(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	o := e.options(node)
	o.Grace = time.Hour // only the decision may finish these
	e.rollbackLeftovers(node, o.Resources)
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	c.hookAfterDecision = func(string) error { return errSimulatedCrash }
	ctx := context.Background()
	id := "ro-" + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return walletTransfer(ctx, tx, "wallet", table, "xat."+e.suffix, true)
	})
	if !errors.Is(err, errSimulatedCrash) {
		t.Fatalf("%+v %v", in, err)
	}
	for _, b := range in.Branches {
		if b.Resource == "wallet" && b.State != BranchReadOnly {
			t.Errorf("the wallet branch only read; its vote was %s, want read_only", b.State)
		}
	}
	c.Close()
	c2 := e.open(o)
	waitFor(t, "recovery to finish the commit", func() bool {
		got, _ := c2.Get(id)
		return got.Status.Final() || got.Status == StatusInDoubt
	})
	got, _ := c2.Get(id)
	if got.Status != StatusCommitted {
		t.Fatalf("status %s (%s: %s), want committed", got.Status, got.Code, got.Message)
	}
	if e.balance(e.pg, table, "b") != 40 || len(e.messages("xat."+e.suffix)) != 1 {
		t.Fatal("the written branches were not committed")
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("left prepared: %v", p)
	}
}

// An in-doubt branch does not stop recovery from committing the other branches of a
// transaction whose commit decision is durable. The in-doubt branch is a real MariaDB one:
// a read-only branch prepared the way an earlier version did (XA PREPARE without a read-only
// vote), by hand under the transaction's xid, then detached; its XA COMMIT answers
// XA_RBROLLBACK. The MariaDB resource is named so that recovery meets it first.
func TestInDoubtBranchDoesNotBlockOtherBranches(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	o := e.options(node)
	o.Resources = []Resource{MySQL("awallet", e.my), Postgres("ledger", e.pg), Broker("broker", e.b)}
	o.Grace = time.Hour
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e.rollbackLeftovers(node, o.Resources)
	c.hookAfterDecision = func(string) error { return errSimulatedCrash }
	id := "doubt-" + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return walletTransfer(ctx, tx, "awallet", table, "xat."+e.suffix, false)
	})
	if !errors.Is(err, errSimulatedCrash) {
		t.Fatalf("%+v %v", in, err)
	}
	// The wallet's branch becomes a read-only one prepared without a read-only vote.
	lit := mysqlXid(makeXid(in.Gtrid, "awallet"))
	conn, err := e.my.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the branch to detach from its dropped session", func() bool {
		_, err := conn.ExecContext(ctx, "XA ROLLBACK "+lit)
		return err == nil
	})
	for _, q := range []string{"XA START " + lit, "SELECT balance FROM " + table + " WHERE id = 'a' FOR UPDATE", "XA END " + lit, "XA PREPARE " + lit} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Raw(func(any) error { return driver.ErrBadConn }) // drop the session: the branch detaches
	conn.Close()
	c.Close()
	c2 := e.open(o)
	waitFor(t, "the other branches to be committed", func() bool {
		return e.balance(e.pg, table, "b") == 40 && len(e.messages("xat."+e.suffix)) == 1
	})
	// A branch leaves the database's prepared list before recovery records what it answered:
	// wait for both.
	var got TxInfo
	waitFor(t, "nothing left prepared and the outcome recorded", func() bool {
		got, _ = c2.Get(id)
		return got.Status == StatusInDoubt && len(e.prepared(node)) == 0
	})
	if got.Status != StatusInDoubt {
		t.Fatalf("status %s, want in_doubt (the wallet's branch answered a rollback to its commit)", got.Status)
	}
	for _, b := range got.Branches {
		if want := map[string]BranchState{"awallet": BranchHeuristic, "ledger": BranchCommitted, "broker": BranchCommitted}[b.Resource]; b.State != want {
			t.Errorf("branch %s is %s, want %s", b.Resource, b.State, want)
		}
	}
}

// The vote itself, on the real MariaDB: only a branch that certainly changed no row votes
// read-only (its locks released at once); a write the branch's Exec did not count (here
// through the pinned connection directly) is found by the handler counters and prepared.
func TestMySQLReadOnlyVote(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100})
	ctx := context.Background()
	r := MySQL("wallet", e.my).rm()
	node := newNode(t)
	e.rollbackLeftovers(node, []Resource{r})
	for _, tc := range []struct {
		name   string
		run    func(bc branchConn) error
		wantRO bool
	}{
		{"select for update", func(bc branchConn) error {
			conn, _ := bc.db(ctx)
			var v int64
			return conn.QueryRowContext(ctx, "SELECT balance FROM "+table+" WHERE id = 'a' FOR UPDATE").Scan(&v)
		}, true},
		{"update of no row", func(bc branchConn) error {
			_, err := bc.exec(ctx, "UPDATE "+table+" SET balance = 1 WHERE id = 'nobody'", nil)
			return err
		}, true},
		{"update of no row, with arguments (unknown: prepared)", func(bc branchConn) error {
			_, err := bc.exec(ctx, "UPDATE "+table+" SET balance = ? WHERE id = ?", []any{1, "nobody"})
			return err
		}, false},
		{"select, then update of no row with arguments", func(bc branchConn) error {
			conn, _ := bc.db(ctx)
			var v int64
			if err := conn.QueryRowContext(ctx, "SELECT balance FROM "+table+" WHERE id = 'a'").Scan(&v); err != nil {
				return err
			}
			_, err := bc.exec(ctx, "UPDATE "+table+" SET balance = ? WHERE id = ?", []any{1, "nobody"})
			return err
		}, true},
		{"write outside exec", func(bc branchConn) error {
			conn, _ := bc.db(ctx)
			_, err := conn.ExecContext(ctx, "UPDATE "+table+" SET balance = balance + 1 WHERE id = 'a'")
			return err
		}, false},
	} {
		x := makeXid(node+uniq(t)+uniq(t), "wallet")
		bc, err := r.start(ctx, x, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := tc.run(bc); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ro, err := bc.prepare(ctx)
		if err != nil || ro != tc.wantRO {
			t.Errorf("%s: read-only vote %v (%v), want %v", tc.name, ro, err, tc.wantRO)
		}
		if !ro {
			if _, err := bc.commit(ctx, false); err != nil {
				t.Fatal(err)
			}
		}
		bc.release(false)
		// The row is free again (a read-only branch's FOR UPDATE lock went with it).
		if _, err := e.my.ExecContext(ctx, "UPDATE "+table+" SET balance = balance WHERE id = 'a'"); err != nil {
			t.Fatal(err)
		}
	}
	if e.balance(e.my, table, "a") != 101 {
		t.Fatal("the prepared write was not committed")
	}
}

func TestIsCall(t *testing.T) {
	for q, want := range map[string]bool{
		"CALL pay(?)":                    true,
		"  call pay(?)":                  true,
		"/* x */ CALL pay(?)":            true,
		"-- note\nCall pay(?)":           true,
		"/* unterminated":                true,
		"UPDATE t SET a = ? WHERE b = ?": false,
		"/* call */ UPDATE t SET a = ?":  false,
		"SELECT callback FROM t":         false,
	} {
		if got := isCall(q); got != want {
			t.Errorf("isCall(%q) = %v, want %v", q, got, want)
		}
	}
}
