// Command consumer prints the settlement messages of the settlement example as they are
// committed: it joins the consumer group "settlement-printer" for settlement.transfers, prints
// each message and commits its offset, so a restart goes on where it stopped.
//
//	go run ./examples/settlement/consumer [-server http://127.0.0.1:8080]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/imagomq/imago/client"
)

func main() {
	server := flag.String("server", "http://127.0.0.1:8080", "Imago HTTP address")
	group := flag.String("group", "settlement-printer", "consumer group")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	cs := client.NewConsumer(client.New(*server), *group, []string{"settlement.transfers"})
	err := cs.Run(ctx, func(ctx context.Context, m client.FetchedMessage) error {
		key := "-"
		if m.Key != nil {
			key = *m.Key
		}
		fmt.Printf("%s p%d@%d key=%s %s\n", m.Timestamp, m.Partition, m.Offset, key, m.Value)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}
