package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/offsetdb"
)

// TestPartitionEndsWriter checks that a real broker's partition ends reach
// imago.partition_ends in a real PostgreSQL within about a second of a produce.
func TestPartitionEndsWriter(t *testing.T) {
	dsn := testenv.PostgresDSN(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := offsetdb.Config{Store: "postgres", DSN: dsn, Migrate: true, Logger: log}
	store, err := offsetdb.OpenPostgres(ctx, cfg) // applies the migrations
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	var rb [6]byte
	rand.Read(rb[:])
	topic := "ends-" + hex.EncodeToString(rb[:])
	t.Cleanup(func() {
		store.Pool().Exec(ctx, "DELETE FROM imago.partition_ends WHERE topic = $1", topic)
	})

	opts := broker.NewOptions(t.TempDir())
	opts.Logger = log
	b, err := broker.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.CreateTopic(topic, broker.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	ends, err := offsetdb.OpenPartitionEnds(ctx, cfg, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	w := startPartitionEndsWriter(b, ends, 100*time.Millisecond, log)
	stored := func(p int) int64 {
		var end int64 = -1
		store.Pool().QueryRow(ctx, "SELECT end_offset FROM imago.partition_ends WHERE topic = $1 AND partition = $2", topic, p).Scan(&end)
		return end
	}
	waitEnd := func(p int, want int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for stored(p) != want {
			if time.Now().After(deadline) {
				t.Fatalf("partition %d: stored end %d, want %d", p, stored(p), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitEnd(0, 0) // written at start
	msgs := []broker.Message{{Value: []byte(`1`), ValueJSON: true, Partition: 1}, {Value: []byte(`2`), ValueJSON: true, Partition: 1}}
	if _, err := b.Produce(ctx, topic, msgs, ""); err != nil {
		t.Fatal(err)
	}
	waitEnd(1, 2)
	// The last ends are written at close.
	if _, err := b.Produce(ctx, topic, msgs[:1], ""); err != nil {
		t.Fatal(err)
	}
	w.close()
	ends.Close()
	if got := stored(1); got != 3 {
		t.Fatalf("after close: stored end %d, want 3", got)
	}
}
