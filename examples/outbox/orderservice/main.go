// Command orderservice is the order service of the outbox example: each change to an order
// (created, paid, shipped) is written to the orders table and, in the same PostgreSQL
// transaction, as an event into the outbox table. The relay of imago serve publishes the
// events to the topic orders.events, keyed by order id, once each and in order per order.
//
//	go run ./examples/outbox/orderservice [-dsn postgres://...] [-server http://127.0.0.1:8080] [-orders 3]
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/outbox"
)

// Topic is where the order events go.
const Topic = "orders.events"

func main() {
	dsn := flag.String("dsn", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL URL (the shop database)")
	server := flag.String("server", "http://127.0.0.1:8080", "Imago HTTP address (to create the topic)")
	orders := flag.Int("orders", 3, "orders to create, pay and ship")
	flag.Parse()
	if err := run(context.Background(), *dsn, *server, *orders); err != nil {
		fmt.Fprintln(os.Stderr, "orderservice:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dsn, server string, orders int) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	// The outbox table (imago.outbox) and the service's own table.
	if err := migrations.ApplyOutbox(ctx, db, "postgres"); err != nil {
		return fmt.Errorf("create the outbox table: %w", err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS orders (
		id text PRIMARY KEY, status text NOT NULL, amount bigint NOT NULL)`); err != nil {
		return fmt.Errorf("create the orders table: %w", err)
	}
	if _, err := client.New(server).CreateTopic(ctx, Topic, client.TopicConfig{Partitions: 4}); err != nil {
		return fmt.Errorf("create topic %s: %w", Topic, err)
	}
	w, err := outbox.NewWriter("postgres", outbox.DefaultPostgresTable)
	if err != nil {
		return err
	}
	// Every order goes through the same steps; the orders' steps interleave, as in a shop.
	for seq, status := range []string{"created", "paid", "shipped"} {
		for i := 1; i <= orders; i++ {
			id := fmt.Sprintf("ord-%d", i)
			if err := change(ctx, db, w, id, status, seq+1, int64(i)*1250); err != nil {
				return err
			}
			fmt.Printf("order %s %s (row and event committed together)\n", id, status)
		}
	}
	return nil
}

// Event is what the consumer receives.
type Event struct {
	Order  string `json:"order"`
	Seq    int    `json:"seq"` // 1, 2, 3, ... per order: the consumer checks the order
	Status string `json:"status"`
	Amount int64  `json:"amount"`
}

// change writes the order's new status and its event in one transaction.
func change(ctx context.Context, db *sql.DB, w *outbox.Writer, id, status string, seq int, amount int64) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO orders (id, status, amount) VALUES ($1, $2, $3)
		ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status`, id, status, amount); err != nil {
		return fmt.Errorf("order %s: %w", id, err)
	}
	payload, _ := json.Marshal(Event{Order: id, Seq: seq, Status: status, Amount: amount})
	if err := w.WriteSQL(ctx, tx, outbox.Message{Topic: Topic, Key: id, Payload: payload}); err != nil {
		return fmt.Errorf("order %s: outbox: %w", id, err)
	}
	return tx.Commit()
}
