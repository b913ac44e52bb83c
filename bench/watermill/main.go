// Command watermill measures Watermill's SQL forwarder (watermill-sql v4, the outbox
// pattern of the Watermill ecosystem) on the same database and machine as Imago's outbox
// relay, as the baseline figure of the relay's throughput. It lives in a module of its own so
// that Watermill never becomes a dependency of Imago.
//
// It fills Watermill's SQL table for the forwarder topic with -n enveloped messages of
// -payload bytes (in transactions of 500), then starts the forwarder (SQL subscriber ->
// in-memory GoChannel publisher) and times how long it takes until the -n-th message has been
// forwarded. The output publisher is in memory and does not fsync, so the figure is an upper
// bound of Watermill's rate; Imago's relay is measured into a real broker with fsync.
//
//	go run . -dialect postgres -dsn 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
//	go run . -dialect mysql -dsn 'root@tcp(127.0.0.1:3306)/test'
//
// It prints one JSON line: {"dialect", "messages", "seconds", "msgs_per_sec", "batch"}.
package main

import (
	"context"
	stdsql "database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wsql "github.com/ThreeDotsLabs/watermill-sql/v4/pkg/sql"
	"github.com/ThreeDotsLabs/watermill/components/forwarder"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
)

func main() {
	dialect := flag.String("dialect", "postgres", "postgres or mysql")
	dsn := flag.String("dsn", "", "database DSN")
	n := flag.Int("n", 20000, "messages")
	payload := flag.Int("payload", 1024, "payload bytes")
	batch := flag.Int("batch", 100, "SubscribeBatchSize (Watermill's default is 100)")
	flag.Parse()
	if err := run(*dialect, *dsn, *n, *payload, *batch); err != nil {
		fmt.Fprintln(os.Stderr, "watermill bench:", err)
		os.Exit(1)
	}
}

func run(dialect, dsn string, n, size, batch int) error {
	ctx := context.Background()
	driver := "pgx"
	if dialect == "mysql" {
		driver = "mysql"
	}
	db, err := stdsql.Open(driver, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	logger := watermill.NopLogger{}
	suffix := fmt.Sprintf("%d", time.Now().UnixNano())
	fwdTopic := "imago_bench_fwd_" + suffix

	var schema wsql.SchemaAdapter
	var offsets wsql.OffsetsAdapter
	if dialect == "mysql" {
		schema = wsql.DefaultMySQLSchema{SubscribeBatchSize: batch, GeneratePayloadType: func(string) string { return "BLOB" }}
		offsets = wsql.DefaultMySQLOffsetsAdapter{}
	} else {
		schema = wsql.DefaultPostgreSQLSchema{SubscribeBatchSize: batch, GeneratePayloadType: func(string) string { return "BYTEA" }}
		offsets = wsql.DefaultPostgreSQLOffsetsAdapter{}
	}
	defer func() {
		for _, t := range []string{"watermill_" + fwdTopic, "watermill_offsets_" + fwdTopic} {
			q := `DROP TABLE IF EXISTS "` + t + `"`
			if dialect == "mysql" {
				q = "DROP TABLE IF EXISTS `" + t + "`"
			}
			_, _ = db.ExecContext(ctx, q)
		}
	}()

	sqlPub, err := wsql.NewPublisher(wsql.BeginnerFromStdSQL(db), wsql.PublisherConfig{SchemaAdapter: schema, AutoInitializeSchema: true}, logger)
	if err != nil {
		return err
	}
	pub := forwarder.NewPublisher(sqlPub, forwarder.PublisherConfig{ForwarderTopic: fwdTopic})
	body := []byte(strings.Repeat("x", size))
	for done := 0; done < n; {
		k := min(500, n-done)
		msgs := make([]*message.Message, k)
		for i := range msgs {
			msgs[i] = message.NewMessage(watermill.NewUUID(), body)
		}
		if err := pub.Publish("out", msgs...); err != nil {
			return fmt.Errorf("fill: %w", err)
		}
		done += k
	}

	sub, err := wsql.NewSubscriber(wsql.BeginnerFromStdSQL(db), wsql.SubscriberConfig{
		SchemaAdapter: schema, OffsetsAdapter: offsets, InitializeSchema: true,
		PollInterval: 10 * time.Millisecond, ConsumerGroup: "bench",
	}, logger)
	if err != nil {
		return err
	}
	out := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: int64(n)}, logger)
	received, err := out.Subscribe(ctx, "out")
	if err != nil {
		return err
	}
	fwd, err := forwarder.NewForwarder(sub, out, logger, forwarder.Config{ForwarderTopic: fwdTopic})
	if err != nil {
		return err
	}
	start := time.Now()
	go func() { _ = fwd.Run(ctx) }()
	deadline := time.After(10 * time.Minute)
	for i := 0; i < n; i++ {
		select {
		case m := <-received:
			m.Ack()
		case <-deadline:
			return fmt.Errorf("only %d of %d messages forwarded in 10 minutes", i, n)
		}
	}
	el := time.Since(start)
	_ = fwd.Close()
	return json.NewEncoder(os.Stdout).Encode(map[string]any{
		"dialect": dialect, "messages": n, "seconds": el.Seconds(), "msgs_per_sec": float64(n) / el.Seconds(), "batch": batch,
	})
}
