package xa

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
)

// The one-phase COMMIT is the decision itself: the request that asked for it (an HTTP client
// that disconnects) or the transaction's deadline passing while it runs must not cancel it.
// PostgreSQL: a COMMIT made slow by a deferred constraint trigger (pg_sleep) while the request
// is cancelled and the deadline passes; the commit completes and is reported committed.
func TestOnePhaseCommitOutlivesRequestPostgres(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100})
	fn := "xat_slow_" + e.suffix
	ctx := context.Background()
	for _, q := range []string{
		"CREATE FUNCTION " + fn + "() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$",
		"CREATE CONSTRAINT TRIGGER " + fn + " AFTER UPDATE ON " + table + " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION " + fn + "()",
	} {
		if _, err := e.pg.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { e.pg.Exec("DROP FUNCTION IF EXISTS " + fn + "() CASCADE") })
	c := e.open(e.options(newNode(t)))

	reqCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The client goes away once the COMMIT runs (sleeping in the trigger).
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			var n int
			if err := e.pg.QueryRow("SELECT count(*) FROM pg_stat_activity WHERE query = 'COMMIT' AND state = 'active' AND wait_event = 'PgSleep'").Scan(&n); err == nil && n > 0 {
				cancel()
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	in, err := c.Run(reqCtx, BeginOptions{Timeout: time.Second}, func(ctx context.Context, tx *GlobalTx) error {
		br, err := tx.Enlist(ctx, "ledger")
		if err != nil {
			return err
		}
		_, err = br.Exec(ctx, "UPDATE "+table+" SET balance = balance - 10 WHERE id = 'a'")
		return err
	})
	<-watched
	if reqCtx.Err() == nil {
		t.Fatal("the COMMIT was never seen running (the test did not cancel the request)")
	}
	if err != nil || in.Status != StatusCommitted {
		t.Fatalf("one-phase commit with the request cancelled and the deadline passed mid-COMMIT: %+v %v; want committed", in, err)
	}
	if got := e.balance(e.pg, table, "a"); got != 90 {
		t.Fatalf("balance %d, want 90 (the COMMIT was cancelled)", got)
	}
}

// The client disconnects after its last step, before the commit: the commit still runs (its
// outcome is decided by the coordinator, not by who asked), on MariaDB and PostgreSQL.
func TestOnePhaseCommitAfterRequestGone(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 100})
	c := e.open(e.options(newNode(t)))
	for _, tc := range []struct{ resource, q string }{
		{"wallet", "UPDATE " + table + " SET balance = balance - 10 WHERE id = 'a'"},
		{"ledger", "UPDATE " + table + " SET balance = balance - 10 WHERE id = 'a'"},
	} {
		t.Run(tc.resource, func(t *testing.T) {
			reqCtx, cancel := context.WithCancel(context.Background())
			in, err := c.Run(reqCtx, BeginOptions{}, func(ctx context.Context, tx *GlobalTx) error {
				br, err := tx.Enlist(ctx, tc.resource)
				if err != nil {
					return err
				}
				_, err = br.Exec(ctx, tc.q)
				cancel() // the client is gone
				return err
			})
			if err != nil || in.Status != StatusCommitted {
				t.Fatalf("one-phase commit after the request was cancelled: %+v %v; want committed", in, err)
			}
			db := e.my
			if tc.resource == "ledger" {
				db = e.pg
			}
			if got := e.balance(db, table, "a"); got != 90 {
				t.Fatalf("balance %d, want 90", got)
			}
		})
	}
}

// Broker back-pressure refuses a one-phase commit before anything is written: that is a
// rollback (nothing published), not in_doubt. The back-pressure is real: a broker with a tiny
// pending-bytes limit kept busy by producers.
func TestOnePhaseBrokerBackpressureRollsBack(t *testing.T) {
	dir := t.TempDir()
	b := openQuietBroker(t, dir+"/broker", func(o *broker.Options) { o.MaxPendingBytes = 256 })
	if _, err := b.CreateTopic("bp", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	o := NewOptions(dir + "/coord")
	o.NodeID = newNode(t)
	o.Resources = []Resource{Broker("broker", b)}
	o.Logger = quietLogger()
	c, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				b.Produce(context.Background(), "bp", []broker.Message{{Key: []byte("load"), Value: make([]byte, 100), Partition: -1}}, "")
			}
		}()
	}
	committed := map[string]bool{}
	rolledBack := 0
	for i := 0; i < 2000 && rolledBack < 3; i++ {
		key := fmt.Sprintf("tx-%d", i)
		in, err := c.Run(context.Background(), BeginOptions{}, func(ctx context.Context, tx *GlobalTx) error {
			return tx.Publish(ctx, broker.TxMessage{Topic: "bp", Message: broker.Message{Key: []byte(key), Value: make([]byte, 200), Partition: -1}})
		})
		switch {
		case err == nil && in.Status == StatusCommitted:
			committed[key] = true
		case errors.Is(err, ErrRolledBack) && in.Status == StatusRolledBack:
			rolledBack++
		default:
			close(stop)
			wg.Wait()
			t.Fatalf("one-phase broker commit %d: %+v %v; want committed or rolled_back", i, in, err)
		}
	}
	close(stop)
	wg.Wait()
	if rolledBack == 0 {
		t.Skip("no commit met back-pressure")
	}
	res, err := b.Fetch(context.Background(), "bp", 0, broker.FetchOptions{Offset: 0, MaxMessages: 1 << 20, MaxBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range res.Messages {
		if k := string(m.Key); k != "load" {
			seen[k] = true
		}
	}
	for k := range committed {
		if !seen[k] {
			t.Errorf("committed transaction %s has no message", k)
		}
	}
	if len(seen) != len(committed) {
		t.Errorf("%d transactional messages stored, %d transactions committed", len(seen), len(committed))
	}
	if got := b.XARecover(); len(got) != 0 {
		t.Errorf("branches left: %v", got)
	}
}
