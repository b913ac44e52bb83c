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
	"sync"
	"time"

	"github.com/imagomq/imago/client"
)

const group = "order-printer"

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
	ctx, cancel := context.WithCancel(sig)
	defer cancel()
	c := client.New(*server)

	var mu sync.Mutex        // the handler runs for several partitions at once
	last := map[string]int{} // order id -> last seq seen
	next := map[int]int64{}  // partition -> offset after the last event handled
	seen := 0
	reached := make(chan struct{})
	cs := client.NewConsumer(c, group, []string{"orders.events"})
	done := make(chan error, 1)
	go func() {
		done <- cs.Run(ctx, func(ctx context.Context, m client.FetchedMessage) error {
			raw := []byte(m.Value)
			if m.ValueBase64 != nil {
				raw, _ = base64.StdEncoding.DecodeString(*m.ValueBase64)
			}
			var e event
			if err := json.Unmarshal(raw, &e); err != nil {
				return fmt.Errorf("offset %d: %w", m.Offset, err)
			}
			mu.Lock()
			defer mu.Unlock()
			order := "in order"
			if e.Seq != last[e.Order]+1 {
				order = fmt.Sprintf("OUT OF ORDER (after seq %d)", last[e.Order])
			}
			last[e.Order] = max(last[e.Order], e.Seq)
			next[m.Partition] = m.Offset + 1
			fmt.Printf("%s #%d %s amount=%d p%d@%d %s\n", e.Order, e.Seq, e.Status, e.Amount, m.Partition, m.Offset, order)
			if seen++; *n > 0 && seen == *n {
				close(reached)
			}
			return nil
		})
	}()
	select {
	case err := <-done:
		if err != nil && ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "consumer:", err)
			os.Exit(1)
		}
		return
	case <-reached:
	}
	// -n reached: stop once the group's offsets are committed past every event printed, so
	// that a next run starts after them.
	for !committed(ctx, c, &mu, next) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	<-done
}

// committed reports whether the group's committed offsets have reached next on every partition.
func committed(ctx context.Context, c *client.Client, mu *sync.Mutex, next map[int]int64) bool {
	g, err := c.GroupOffsets(ctx, group)
	if err != nil {
		return false
	}
	have := map[int]int64{}
	for _, o := range g.Offsets {
		have[o.Partition] = o.Offset
	}
	mu.Lock()
	defer mu.Unlock()
	for p, off := range next {
		if have[p] < off {
			return false
		}
	}
	return true
}
