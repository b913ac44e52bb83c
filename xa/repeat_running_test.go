package xa

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
)

// TestRepeatWaitsForRunningAttempt: a repeat of a client id while its first attempt still
// runs waits for that attempt and answers its outcome (a DuplicateError, committed); its own
// fn is never called, and the debit is made once.
func TestRepeatWaitsForRunningAttempt(t *testing.T) {
	e := newEnv(t)
	name := e.tables(map[string]int64{"A": 100})
	c := e.open(e.options(newNode(t)))
	ctx := context.Background()
	id := "rw-" + e.suffix
	release := make(chan struct{})
	started := make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
			br, err := tx.Enlist(ctx, "wallet")
			if err != nil {
				return err
			}
			if _, err := br.Exec(ctx, "UPDATE "+name+" SET balance = balance - 1 WHERE id = 'A'"); err != nil {
				return err
			}
			close(started)
			<-release
			return tx.Publish(ctx, broker.TxMessage{Topic: "xat." + e.suffix, Message: broker.Message{Value: []byte("x")}})
		})
		first <- err
	}()
	<-started
	second := make(chan error, 1)
	ran := false
	go func() {
		_, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error { ran = true; return nil })
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("repeat answered while the first runs: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	err := <-second
	var dup *DuplicateError
	if !errors.As(err, &dup) || dup.Info.Status != StatusCommitted || ran {
		t.Fatalf("repeat: %v ran=%v", err, ran)
	}
	if b := e.balance(e.my, name, "A"); b != 99 {
		t.Fatalf("balance %d", b)
	}
}
