package client_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"

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
func txSetup(t *testing.T, driver string) (c *client.Client, topic, group string, db *sql.DB) {
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
	c = client.New(srv.URL)
	topic, group = txName(t, "txc."), txName(t, "g-")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Produce(ctx, topic, []client.Message{{Value: []byte(`"m0"`)}}, client.ProduceOptions{}); err != nil {
		t.Fatal(err)
	}
	return c, topic, group, db
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
	c, topic, group, db := txSetup(t, "mysql")
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
// failing a message while the new owner applies it and commits its offset. The zombie must
// take the offset row's lock and see that before it dead-letters: a dead letter of an applied
// message, replayed later, would apply it twice.
func TestTxConsumerZombieDoesNotDeadLetter(t *testing.T) {
	c, topic, group, db := txSetup(t, "pgx")
	ctx := context.Background()
	owner, err := db.Conn(ctx) // the new owner's session
	if err != nil {
		t.Fatal(err)
	}
	defer owner.Close()
	var ownerPID int
	if err := owner.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&ownerPID); err != nil {
		t.Fatal(err)
	}
	// The row exists (committed): the new owner's update must wait for the zombie's lock.
	if _, err := db.ExecContext(ctx, `INSERT INTO imago.consumer_offsets (group_name, topic, partition, next_offset, committed_by)
		VALUES ($1, $2, 0, 0, 'first-owner')`, group, topic); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	applied := make(chan error, 1)
	handler := func(ctx context.Context, tx *sql.Tx, msg client.FetchedMessage) error {
		if calls.Add(1) != 3 { // the last attempt: once in the batch, then Attempts (2) one by one
			return errors.New("handler refuses")
		}
		// While this transaction holds the row lock, the new owner applies the message: its
		// update waits for the lock and goes first once the zombie's transaction rolls back.
		go func() {
			_, err := owner.ExecContext(ctx, `UPDATE imago.consumer_offsets SET next_offset = 1, committed_by = 'new-owner'
				WHERE group_name = $1 AND topic = $2 AND partition = 0`, group, topic)
			applied <- err
		}()
		for {
			var waiting bool
			if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)`, ownerPID).Scan(&waiting); err != nil {
				return err
			}
			if waiting {
				return errors.New("handler refuses")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	tc := client.NewTxConsumer(c, group, []string{topic}, db, "postgres",
		client.ConsumerRetry(client.RetryPolicy{Attempts: 2, Backoff: 10 * time.Millisecond}),
		client.ConsumerDeadLetter(true), client.ConsumerPollWait(100*time.Millisecond),
		client.ConsumerLogger(quietLogger()))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tc.Run(rctx, handler) }()
	select {
	case err := <-applied:
		if err != nil {
			t.Fatalf("new owner: %v", err)
		}
	case err := <-done:
		t.Fatalf("consumer stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("timed out waiting for the new owner to apply the message")
	}
	// Give the zombie the time to take its next step (there is nothing to wait on when it
	// does nothing wrong); a dead letter shows in the topic.
	time.Sleep(time.Second)
	cancel()
	<-done
	if n := dlqCount(t, c, topic); n != 0 {
		t.Fatalf("the zombie dead-lettered a message the new owner applied (%d dead letters)", n)
	}
	if n := storedOffset(t, db, "pgx", group, topic); n != 1 {
		t.Fatalf("stored offset %d, want 1", n)
	}
}
