package client_test

import (
	"context"
	"database/sql"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/imagomq/imago/client"
)

// Consume a topic as a member of a group: at least once, with retries and a dead-letter topic
// for messages that keep failing. Ctrl-C commits what was handled and leaves the group.
func ExampleConsumer() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	c := client.New("http://127.0.0.1:8080")
	cs := client.NewConsumer(c, "settlement", []string{"settlement.transfers"},
		client.ConsumerID("settler-1"), // a restart replaces this member at once
		client.ConsumerRetry(client.RetryPolicy{Attempts: 5, Backoff: 200 * time.Millisecond}),
	)
	err := cs.Run(ctx, func(ctx context.Context, m client.FetchedMessage) error {
		fmt.Printf("%s/%d/%d %s\n", m.Topic, m.Partition, m.Offset, m.Value)
		return nil // an error retries, then moves the message to settlement.transfers.DLQ
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Apply each transfer to the application's database exactly once: the insert and the
// consumer's offset are committed in one transaction.
func ExampleTxConsumer() {
	ctx := context.Background()
	db, err := sql.Open("pgx", "postgres://app@127.0.0.1:5432/payments") // import _ "github.com/jackc/pgx/v5/stdlib"
	if err != nil {
		log.Fatal(err)
	}
	c := client.New("http://127.0.0.1:8080")
	tc := client.NewTxConsumer(c, "ledger-writer", []string{"settlement.transfers"}, db, "postgres")
	err = tc.Run(ctx, func(ctx context.Context, tx *sql.Tx, m client.FetchedMessage) error {
		_, err := tx.ExecContext(ctx,
			`INSERT INTO ledger (topic, part, off, body) VALUES ($1, $2, $3, $4)`,
			m.Topic, m.Partition, m.Offset, string(m.Value))
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}
