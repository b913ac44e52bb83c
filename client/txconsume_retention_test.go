package client_test

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/offsetdb"
)

// TestTxConsumerOffsetBeforeTopicStartStops: retention deleted messages a transactional consumer
// had not applied (its database's offset is below the partition's start). They are gone for it:
// an operator must decide. The consumer retried reading them forever, logging a warning and
// holding every partition it owned; it stops now with an error that says so, as it does when
// it finds the same while realigning a batch.
func TestTxConsumerOffsetBeforeTopicStartStops(t *testing.T) {
	ctx := context.Background()
	db, err := sql.Open("mysql", testenv.MySQLDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := migrations.Apply(ctx, db, "mysql"); err != nil {
		t.Fatal(err)
	}
	offs, err := offsetdb.OpenFile(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { offs.Close() })
	srv := startImago(t, "", gateway.Options{Offsets: offs, Logger: quietLogger()},
		func(o *broker.Options) { o.SegmentBytes, o.IndexSegmentEntries = 4096, 8 })
	c := client.New(srv.URL)
	topic, group := txName(t, "txr."), txName(t, "g-")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1, RetentionBytes: 1}); err != nil {
		t.Fatal(err)
	}
	produce := func(n int) {
		for i := 0; i < n; i++ {
			v := fmt.Sprintf("%q", strings.Repeat("x", 200))
			if _, err := c.Produce(ctx, topic, []client.Message{{Value: []byte(v)}}, client.ProduceOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	run := func(h client.TxHandler) (context.CancelFunc, chan error) {
		tc := client.NewTxConsumer(c, group, []string{topic}, db, "mysql",
			client.ConsumerPollWait(100*time.Millisecond), client.ConsumerLogger(quietLogger()),
			client.ConsumerRetry(client.RetryPolicy{Attempts: 1, Backoff: 10 * time.Millisecond}))
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- tc.Run(rctx, h) }()
		return cancel, done
	}

	produce(1)
	cancel, done := run(func(context.Context, *sql.Tx, client.FetchedMessage) error { return nil })
	deadline := time.Now().Add(20 * time.Second)
	for storedOffset(t, db, "mysql", group, topic) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the first message to be applied")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done

	produce(60) // several segments of 4 KiB; retention keeps the active one only
	if err := srv.b.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	srv.b.EnforceRetention()
	info, err := srv.b.Topic(topic)
	if err != nil {
		t.Fatal(err)
	}
	if start := info.Partitions[0].StartOffset; start <= 1 {
		t.Fatalf("retention left the partition starting at %d, want past the stored offset 1", start)
	}

	applied := make(chan int64, 100)
	cancel, done = run(func(_ context.Context, _ *sql.Tx, m client.FetchedMessage) error {
		applied <- m.Offset
		return nil
	})
	defer cancel()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no longer in the topic") {
			t.Fatalf("consumer stopped with %v, want the error that its stored offset is no longer in the topic", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the consumer keeps retrying a read of offsets retention deleted, holding its partitions")
	}
	if len(applied) > 0 {
		t.Fatalf("the consumer applied offset %d, past messages it never applied", <-applied)
	}
}
