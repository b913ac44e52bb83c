package client_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/offsetdb"
)

func txName(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// txSetup makes a topic of one partition holding one message, and a database handle.
func txSetup(t *testing.T, driver string) (c *client.Client, topic, group string, db *sql.DB, url string) {
	t.Helper()
	ctx := context.Background()
	dsn := testenv.PostgresDSN(t)
	if driver == "mysql" {
		dsn = testenv.MySQLDSN(t)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	dialect := "postgres"
	if driver == "mysql" {
		dialect = "mysql"
	}
	if err := migrations.Apply(ctx, db, dialect); err != nil {
		t.Fatal(err)
	}
	offs, err := offsetdb.OpenFile(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { offs.Close() })
	srv := startImago(t, "", gateway.Options{Offsets: offs, AutoCreateTopics: true, Logger: quietLogger()})
	c, url = client.New(srv.URL), srv.URL
	topic, group = txName(t, "txc."), txName(t, "g-")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Produce(ctx, topic, []client.Message{{Value: []byte(`"m0"`)}}, client.ProduceOptions{}); err != nil {
		t.Fatal(err)
	}
	return c, topic, group, db, url
}

// storedOffset reads the partition's offset from the consumer's database (-1: no row).
func storedOffset(t *testing.T, db *sql.DB, driver, group, topic string) int64 {
	t.Helper()
	q := `SELECT next_offset FROM imago.consumer_offsets WHERE group_name = $1 AND topic = $2 AND partition = 0`
	if driver == "mysql" {
		q = "SELECT next_offset FROM imago_consumer_offsets WHERE group_name = ? AND topic = ? AND `partition` = 0"
	}
	var n int64
	err := db.QueryRow(q, group, topic).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func dlqCount(t *testing.T, c *client.Client, topic string) int {
	t.Helper()
	res, err := c.Fetch(context.Background(), client.DLQTopic(topic), 0, client.FetchOptions{MaxMessages: 100})
	if client.IsCode(err, "unknown_topic") {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return len(res.Messages)
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestTxConsumerDeadLetterAgainAfterRestart: a consumer dead-lettered a message and died
// before committing its offset; the next one dead-letters the same message again, with
// another time and perhaps another error. Its dead letter is the same message of the same
// group under the same key: the consumer must take it as stored and go on, not stop on the
// broker's idempotency_key_reused.
func TestTxConsumerDeadLetterAgainAfterRestart(t *testing.T) {
	c, topic, group, db, _ := txSetup(t, "mysql")
	ctx := context.Background()
	res, err := c.Fetch(ctx, topic, 0, client.FetchOptions{MaxMessages: 1})
	if err != nil || len(res.Messages) != 1 {
		t.Fatalf("fetch: %v %+v", err, res)
	}
	m := res.Messages[0]
	// The first consumer's dead letter (written as client.DeadLetter writes it, a while ago).
	if _, err := c.CreateTopic(ctx, client.DLQTopic(topic), client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	first := client.DeadLetter(group, m, errors.New("connection reset by peer"), 3)
	first.Partition = client.Ptr(0)
	if _, err := c.Produce(ctx, client.DLQTopic(topic), []client.Message{first}, client.ProduceOptions{IdempotencyKey: client.DeadLetterKey(group, m)}); err != nil {
		t.Fatal(err)
	}

	tc := client.NewTxConsumer(c, group, []string{topic}, db, "mysql",
		client.ConsumerRetry(client.RetryPolicy{Attempts: 2, Backoff: 10 * time.Millisecond}),
		client.ConsumerDeadLetter(true), client.ConsumerPollWait(100*time.Millisecond),
		client.ConsumerLogger(quietLogger()))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- tc.Run(rctx, func(ctx context.Context, tx *sql.Tx, msg client.FetchedMessage) error {
			return errors.New("handler refuses")
		})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for storedOffset(t, db, "mysql", group, topic) != 1 {
		select {
		case err := <-done:
			t.Fatalf("consumer stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the dead letter's offset to be committed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	if n := dlqCount(t, c, topic); n != 1 {
		t.Fatalf("%d dead letters, want 1", n)
	}
}

// TestTxConsumerZombieDoesNotDeadLetter: a member that lost the partition (a zombie) keeps
// failing a message while the new owner applies it. A dead letter of a message the new owner
// applied would, replayed, apply it twice: the zombie must hold the offset row's lock, and
// have checked the offset, while it sends the dead letter. The new owner here applies the
// message the moment the zombie starts sending its dead letter (a hook in the zombie's HTTP
// transport), waiting at most 500 ms for the row: if it gets the row, the zombie was not
// holding it.
func TestTxConsumerZombieDoesNotDeadLetter(t *testing.T) {
	_, topic, group, db, url := txSetup(t, "pgx")
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, `INSERT INTO imago.consumer_offsets (group_name, topic, partition, next_offset, committed_by)
		VALUES ($1, $2, 0, 0, 'first-owner')`, group, topic); err != nil {
		t.Fatal(err)
	}
	owner, err := db.Conn(ctx) // the new owner's session
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	if _, err := owner.ExecContext(ctx, `SET lock_timeout = '500ms'`); err != nil {
		t.Fatal(err)
	}
	var hooked, applied atomic.Bool
	var ownerErr atomic.Value
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if strings.Contains(r.URL.Path, ".DLQ") && hooked.CompareAndSwap(false, true) {
			res, err := owner.ExecContext(context.Background(), `UPDATE imago.consumer_offsets SET next_offset = 1, committed_by = 'new-owner'
				WHERE group_name = $1 AND topic = $2 AND partition = 0 AND next_offset = 0`, group, topic)
			if err == nil {
				n, _ := res.RowsAffected()
				applied.Store(n == 1)
			} else {
				ownerErr.Store(err)
			}
		}
		return http.DefaultTransport.RoundTrip(r)
	})
	c := client.New(url, client.WithHTTPClient(&http.Client{Transport: rt}))
	tc := client.NewTxConsumer(c, group, []string{topic}, db, "postgres",
		client.ConsumerRetry(client.RetryPolicy{Attempts: 2, Backoff: 10 * time.Millisecond}),
		client.ConsumerDeadLetter(true), client.ConsumerPollWait(100*time.Millisecond),
		client.ConsumerLogger(quietLogger()))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- tc.Run(rctx, func(ctx context.Context, tx *sql.Tx, msg client.FetchedMessage) error {
			return errors.New("handler refuses")
		})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for !hooked.Load() || storedOffset(t, db, "pgx", group, topic) != 1 || dlqCount(t, c, topic) != 1 {
		select {
		case err := <-done:
			t.Fatalf("consumer stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out: hooked %v, offset %d, %d dead letters", hooked.Load(), storedOffset(t, db, "pgx", group, topic), dlqCount(t, c, topic))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if applied.Load() {
		t.Fatal("the new owner applied the message while the zombie was dead-lettering it: applied and dead-lettered")
	}
	if err, _ := ownerErr.Load().(error); err == nil || !strings.Contains(err.Error(), "55P03") {
		t.Errorf("the new owner's update: %v; want a lock timeout (55P03): the zombie holds the row while it sends the dead letter", err)
	}
}
