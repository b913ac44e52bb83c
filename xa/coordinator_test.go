package xa

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
)

func msg(topic, key, value string) broker.TxMessage {
	return broker.TxMessage{Topic: topic, Message: broker.Message{Key: []byte(key), Value: []byte(value), Partition: -1}}
}

// transfer moves amount from a MariaDB row to a PostgreSQL row with a message.
func transfer(ctx context.Context, tx *GlobalTx, table, from, to string, amount int64, m broker.TxMessage) error {
	w, err := tx.Enlist(ctx, "wallet")
	if err != nil {
		return err
	}
	n, err := w.Exec(ctx, "UPDATE "+table+" SET balance = balance - ? WHERE id = ? AND balance >= ?", amount, from, amount)
	if err != nil {
		return err
	}
	if n != 1 {
		return &Reason{Code: "step_failed", Message: "insufficient funds"}
	}
	l, err := tx.Enlist(ctx, "ledger")
	if err != nil {
		return err
	}
	if _, err := l.Exec(ctx, "UPDATE "+table+" SET balance = balance + $1 WHERE id = $2", amount, to); err != nil {
		return err
	}
	return tx.Publish(ctx, m)
}

func TestCommitTwoPhase(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100, "b": 0})
	node := newNode(t)
	c := e.open(e.options(node))
	ctx := context.Background()
	topic := "xat." + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: "t1-" + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, table, "a", "b", 30, msg(topic, "a", `{"amount":30}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if in.Status != StatusCommitted || len(in.Branches) != 3 || len(in.Offsets) != 1 {
		t.Fatalf("outcome %+v", in)
	}
	if got := e.balance(e.my, table, "a"); got != 70 {
		t.Fatalf("wallet a = %d, want 70", got)
	}
	if got := e.balance(e.pg, table, "b"); got != 30 {
		t.Fatalf("ledger b = %d, want 30", got)
	}
	if n := len(e.messages(topic)); n != 1 {
		t.Fatalf("%d messages, want 1", n)
	}
	// A repeat returns the first outcome and does nothing.
	in2, err := c.Run(ctx, BeginOptions{ID: "t1-" + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
		t.Fatal("a repeat ran its function")
		return nil
	})
	var dup *DuplicateError
	if !errors.As(err, &dup) || in2.Status != StatusCommitted || in2.Gtrid != in.Gtrid {
		t.Fatalf("repeat: %+v, %v", in2, err)
	}
	if got := e.balance(e.my, table, "a"); got != 70 {
		t.Fatalf("after repeat wallet a = %d, want 70", got)
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("prepared branches left: %v", p)
	}
	got, err := c.Get("t1-" + e.suffix)
	if err != nil || got.Status != StatusCommitted {
		t.Fatalf("Get: %+v %v", got, err)
	}
}

func TestRollbackOnStepFailure(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 10, "b": 0})
	c := e.open(e.options(newNode(t)))
	ctx := context.Background()
	topic := "xat." + e.suffix
	in, err := c.Run(ctx, BeginOptions{ID: "rb-" + e.suffix}, func(ctx context.Context, tx *GlobalTx) error {
		// The credit and the message come first, then the debit fails.
		l, _ := tx.Enlist(ctx, "ledger")
		if _, err := l.Exec(ctx, "UPDATE "+table+" SET balance = balance + 50 WHERE id = 'b'"); err != nil {
			return err
		}
		if err := tx.Publish(ctx, msg(topic, "a", `{}`)); err != nil {
			return err
		}
		w, _ := tx.Enlist(ctx, "wallet")
		n, err := w.Exec(ctx, "UPDATE "+table+" SET balance = balance - 50 WHERE id = 'a' AND balance >= 50")
		if err != nil {
			return err
		}
		if n != 1 {
			return &Reason{Code: "step_failed", Message: "step 2 wallet.debit affected 0 rows, expected 1"}
		}
		return nil
	})
	if !errors.Is(err, ErrRolledBack) || in.Status != StatusRolledBack || in.Code != "step_failed" {
		t.Fatalf("outcome %+v, %v", in, err)
	}
	if e.balance(e.pg, table, "b") != 0 || e.balance(e.my, table, "a") != 10 || len(e.messages(topic)) != 0 {
		t.Fatal("a rolled-back transaction left changes")
	}
	// The repeat returns the rollback with its reason.
	in2, err := c.Run(ctx, BeginOptions{ID: "rb-" + e.suffix}, func(context.Context, *GlobalTx) error { return nil })
	if in2.Status != StatusRolledBack || in2.Code != "step_failed" || err == nil {
		t.Fatalf("repeat: %+v %v", in2, err)
	}
}

func TestOnePhaseAndReadOnly(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 10})
	c := e.open(e.options(newNode(t)))
	ctx := context.Background()

	// One resource with work, no client id: one phase, nothing in the decision log.
	tx, _ := c.Begin(ctx, BeginOptions{})
	w, _ := tx.Enlist(ctx, "wallet")
	if _, err := w.Exec(ctx, "UPDATE "+table+" SET balance = 11 WHERE id = 'a'"); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Enlist(ctx, "ledger"); err != nil { // enlisted, never used: no branch
		t.Fatal(err)
	}
	in, err := tx.Commit(ctx)
	if err != nil || in.Status != StatusCommitted || len(in.Branches) != 1 {
		t.Fatalf("one phase: %+v %v", in, err)
	}
	if e.balance(e.my, table, "a") != 11 {
		t.Fatal("one-phase commit lost")
	}
	c.mu.Lock()
	logged := c.txs[in.Gtrid].logged
	c.mu.Unlock()
	if logged {
		t.Fatal("a one-phase commit wrote to the decision log")
	}

	// A PostgreSQL branch that only reads votes rdonly and skips phase 2.
	tx, _ = c.Begin(ctx, BeginOptions{})
	l, _ := tx.Enlist(ctx, "ledger")
	var bal int64
	if err := l.QueryRow(ctx, "SELECT balance FROM "+table+" WHERE id = $1", []any{"a"}, &bal); err != nil || bal != 10 {
		t.Fatalf("query: %d %v", bal, err)
	}
	w, _ = tx.Enlist(ctx, "wallet")
	if _, err := w.Exec(ctx, "UPDATE "+table+" SET balance = 12 WHERE id = 'a'"); err != nil {
		t.Fatal(err)
	}
	in, err = tx.Commit(ctx)
	if err != nil || in.Status != StatusCommitted {
		t.Fatalf("rdonly: %+v %v", in, err)
	}
	for _, b := range in.Branches {
		want := BranchCommitted
		if b.Resource == "ledger" {
			want = BranchReadOnly
		}
		if b.State != want {
			t.Fatalf("branch %s is %s, want %s", b.Resource, b.State, want)
		}
	}
	if e.balance(e.my, table, "a") != 12 {
		t.Fatal("commit lost")
	}
}

func TestTimeoutRollsBack(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 10})
	c := e.open(e.options(newNode(t)))
	ctx := context.Background()
	tx, err := c.Begin(ctx, BeginOptions{Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := tx.Enlist(ctx, "wallet")
	if _, err := w.Exec(ctx, "UPDATE "+table+" SET balance = 0 WHERE id = 'a'"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Publish(ctx, msg("xat."+e.suffix, "k", "v")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the timeout", func() bool { return tx.Info().Status == StatusRolledBack })
	if _, err := tx.Commit(ctx); !errors.Is(err, ErrTimedOut) {
		t.Fatalf("commit after timeout: %v", err)
	}
	if e.balance(e.my, table, "a") != 10 || len(e.messages("xat."+e.suffix)) != 0 {
		t.Fatal("a timed-out transaction left changes")
	}
}

// A configured node id is used and written to the directory; a directory that already holds
// another id refuses it (its prepared branches and decisions carry the old one).
func TestConfiguredNodeID(t *testing.T) {
	e := newEnv(t)
	node := newNode(t)
	o := e.options(node)
	o.Dir = t.TempDir()
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeID() != node {
		t.Fatalf("node id %s, want the configured %s", c.NodeID(), node)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	o.NodeID = newNode(t)
	if c, err := Open(context.Background(), o); err == nil || !strings.Contains(err.Error(), "differs from") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("a second node id on the same directory: %v, want a refusal", err)
	}
}
