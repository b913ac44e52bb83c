// Command orderservice is the order service of the outbox example: each change to an order
// (created, paid, shipped) is written to the orders table and, in the same PostgreSQL
// transaction, as an event into the outbox table. The relay of imago serve publishes the
// events to the topic orders.events, keyed by order id, once each and in order per order. A
// change is conditional on the order's current status, so running the service again (after a
// crash, or a commit whose answer was lost) finds the changes made and writes no second event.
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
	"slices"

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
	for seq, status := range steps {
		for i := 1; i <= orders; i++ {
			id := fmt.Sprintf("ord-%d", i)
			done, err := change(ctx, db, w, id, seq+1, int64(i)*1250)
			if err != nil {
				return err
			}
			if done {
				fmt.Printf("order %s %s (done already: no new event)\n", id, status)
				continue
			}
			fmt.Printf("order %s %s (row and event committed together)\n", id, status)
		}
	}
	return nil
}

// steps are an order's statuses, in order: the step of seq is steps[seq-1].
var steps = []string{"created", "paid", "shipped"}

// Event is what the consumer receives.
type Event struct {
	Order  string `json:"order"`
	Seq    int    `json:"seq"` // 1, 2, 3, ... per order: the consumer checks the order
	Status string `json:"status"`
	Amount int64  `json:"amount"`
}

// change moves the order to step seq and writes its event, in one transaction. The move is
// conditional (created: no row yet; then: the row is at the step before), so a change made
// again, by a run after a crash or after a commit whose answer was lost, finds it done
// (done = true) and writes no second event.
func change(ctx context.Context, db *sql.DB, w *outbox.Writer, id string, seq int, amount int64) (done bool, err error) {
	status := steps[seq-1]
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var res sql.Result
	if seq == 1 {
		res, err = tx.ExecContext(ctx, `INSERT INTO orders (id, status, amount) VALUES ($1, $2, $3)
			ON CONFLICT (id) DO NOTHING`, id, status, amount)
	} else {
		res, err = tx.ExecContext(ctx, `UPDATE orders SET status = $2 WHERE id = $1 AND status = $3`, id, status, steps[seq-2])
	}
	if err != nil {
		return false, fmt.Errorf("order %s %s: %w", id, status, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, fmt.Errorf("order %s %s: %w", id, status, err)
	} else if n == 0 {
		// Not moved: done already if the order is at this step or past it.
		var now string
		if err := tx.QueryRowContext(ctx, `SELECT status FROM orders WHERE id = $1`, id).Scan(&now); err != nil {
			return false, fmt.Errorf("order %s %s: %w", id, status, err)
		}
		if slices.Index(steps, now) < seq-1 {
			return false, fmt.Errorf("order %s: %s, not %s: cannot be %s", id, now, steps[max(seq-2, 0)], status)
		}
		return true, nil
	}
	payload, err := json.Marshal(Event{Order: id, Seq: seq, Status: status, Amount: amount})
	if err != nil {
		return false, err
	}
	if err := w.WriteSQL(ctx, tx, outbox.Message{Topic: Topic, Key: id, Payload: payload}); err != nil {
		return false, fmt.Errorf("order %s: outbox: %w", id, err)
	}
	return false, tx.Commit()
}
