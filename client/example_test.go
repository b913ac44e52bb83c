package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"time"

	"github.com/imagomq/imago/client"
)

// Produce a payment event durably, safe to retry with the same idempotency key, and read it back.
func Example() {
	ctx := context.Background()
	c := client.New("http://127.0.0.1:8080")
	if _, err := c.CreateTopic(ctx, "settlement.transfers", client.TopicConfig{Partitions: 4}); err != nil {
		log.Fatal(err)
	}
	res, err := c.Produce(ctx, "settlement.transfers", []client.Message{{
		Key:   client.Ptr("acct-42"),
		Value: json.RawMessage(`{"from":"acct-42","to":"acct-7","amount":100}`),
	}}, client.ProduceOptions{IdempotencyKey: "transfer-8812"})
	if err != nil {
		log.Fatal(err) // the outcome is unknown: retry with the same key
	}
	at := res.Offsets[0]
	page, err := c.Fetch(ctx, "settlement.transfers", at.Partition, client.FetchOptions{Offset: at.Offset, Wait: time.Second})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(page.Messages[0].Value))
}
