// Command consumer prints the order events of the outbox example as they arrive, one line per
// event, and checks that each order's events come in order (seq 1, 2, 3, ...).
//
//	go run ./examples/outbox/consumer [-server http://127.0.0.1:8080] [-n 0]
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/imagomq/imago/client"
)

type event struct {
	Order  string `json:"order"`
	Seq    int    `json:"seq"`
	Status string `json:"status"`
	Amount int64  `json:"amount"`
}

func main() {
	server := flag.String("server", "http://127.0.0.1:8080", "Imago HTTP address")
	n := flag.Int("n", 0, "stop after this many events (0: run until interrupted)")
	flag.Parse()
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, done := context.WithCancel(sig)
	defer done()
	last := map[string]int{} // order id -> last seq seen
	seen := 0
	cs := client.NewConsumer(client.New(*server), "order-printer", []string{"orders.events"})
	err := cs.Run(ctx, func(ctx context.Context, m client.FetchedMessage) error {
		raw := []byte(m.Value)
		if m.ValueBase64 != nil {
			raw, _ = base64.StdEncoding.DecodeString(*m.ValueBase64)
		}
		var e event
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("offset %d: %w", m.Offset, err)
		}
		order := "in order"
		if e.Seq != last[e.Order]+1 {
			order = fmt.Sprintf("OUT OF ORDER (after seq %d)", last[e.Order])
		}
		if e.Seq > last[e.Order] {
			last[e.Order] = e.Seq
		}
		fmt.Printf("%s #%d %s amount=%d p%d@%d %s\n", e.Order, e.Seq, e.Status, e.Amount, m.Partition, m.Offset, order)
		if seen++; *n > 0 && seen >= *n {
			done() // -n reached: stop
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}
