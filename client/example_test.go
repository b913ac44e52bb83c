package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"sync"
	"time"

	"github.com/imagomq/imago/client"
)

// imagoURL, in these examples, is the address of a running server such as
// "http://127.0.0.1:8080" (`imago serve`); the test binary starts one in-process.

// Produce a payment event durably, safe to retry with the same idempotency key, and read it back.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := client.New(imagoURL) // client.WithToken(os.Getenv("IMAGO_TOKEN")) when auth is on
	if _, err := c.CreateTopic(ctx, "settlement.transfers", client.TopicConfig{Partitions: 4}); err != nil {
		log.Fatal(err)
	}
	res, err := c.Produce(ctx, "settlement.transfers", []client.Message{{
		Key:   client.Ptr("acct-42"),
		Value: json.RawMessage(`{"from":"acct-42","to":"acct-7","amount":100}`),
	}}, client.ProduceOptions{IdempotencyKey: "transfer-8812"})
	if err != nil {
		log.Fatal(err) // retried already; the outcome is unknown: retry later with the same key
	}
	at := res.Offsets[0]
	page, err := c.Fetch(ctx, "settlement.transfers", at.Partition, client.FetchOptions{Offset: at.Offset, Wait: time.Second})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(page.Messages[0].Value))
	// Output: {"from":"acct-42","to":"acct-7","amount":100}
}

// A batching producer: Send returns at once, the outcome arrives in a callback. Messages of
// one key keep their order; each batch is one atomic, durable request with its own
// idempotency key, so retries never store a message twice.
func ExampleProducer() {
	ctx := context.Background()
	c := client.New(imagoURL)
	if _, err := c.CreateTopic(ctx, "ledger.entries", client.TopicConfig{Partitions: 2}); err != nil {
		log.Fatal(err)
	}
	p := c.NewProducer(client.ProducerLinger(5*time.Millisecond), client.ProducerMaxBatch(100))
	var mu sync.Mutex
	stored, failed := 0, 0
	for i := range 250 {
		m := client.Message{Key: client.Ptr(fmt.Sprintf("acct-%d", i%10)), Value: json.RawMessage(fmt.Sprintf(`{"entry":%d}`, i))}
		err := p.Send(ctx, "ledger.entries", m, func(d client.Delivery) {
			mu.Lock()
			defer mu.Unlock()
			if d.Err != nil {
				// The batch may still be stored (its answers were lost until the delivery
				// timeout): sending d.Message again would store it twice. Log it and stop, or
				// find out first; see Delivery.Err.
				failed++
				return
			}
			stored++
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	// Close sends what is queued and waits for every callback.
	if err := p.Close(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("stored", stored, "failed", failed)
	// Output: stored 250 failed 0
}

// A result channel instead of a callback.
func ExampleProducer_SendCh() {
	ctx := context.Background()
	p := client.New(imagoURL).NewProducer()
	defer p.Close(ctx)
	d := <-p.SendCh(ctx, "audit", client.Text("login acct-42"))
	fmt.Println(d.Err == nil, d.Topic)
	// Output: true audit
}

// A local transaction: a debit and a credit on two topics become visible together at
// commit, or never.
func ExampleClient_Begin() {
	ctx := context.Background()
	c := client.New(imagoURL)
	for _, t := range []string{"wallet.debits", "wallet.credits"} {
		if _, err := c.CreateTopic(ctx, t, client.TopicConfig{Partitions: 1}); err != nil {
			log.Fatal(err)
		}
	}
	tx, err := c.Begin(ctx, 30*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := tx.Add(ctx,
		client.To("wallet.debits", client.JSON(`{"account":"A","amount":100}`)),
		client.To("wallet.credits", client.JSON(`{"account":"B","amount":100}`))); err != nil {
		_ = tx.Rollback(ctx)
		log.Fatal(err)
	}
	positions, err := tx.Commit(ctx)
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range positions {
		fmt.Println("stored on", p.Topic)
	}
	// Output:
	// stored on wallet.debits
	// stored on wallet.credits
}

// The broker as one resource of a two-phase commit: what a transaction manager does with the
// XAResource (beside a database's branch of the same global transaction).
func ExampleXAResource() {
	ctx := context.Background()
	c := client.New(imagoURL)
	if _, err := c.CreateTopic(ctx, "settlement.xa", client.TopicConfig{Partitions: 1}); err != nil {
		log.Fatal(err)
	}
	rm := c.NewXAResource()
	_ = rm.SetTransactionTimeout(30 * time.Second)
	xid := client.Xid{FormatID: 1, Gtrid: []byte(fmt.Sprintf("transfer-%d", time.Now().UnixNano())), Bqual: []byte("broker")}

	// Phase 0: work inside the branch.
	if err := rm.Start(ctx, xid, client.TMNoFlags); err != nil {
		log.Fatal(err)
	}
	if err := rm.Publish(ctx, xid, client.To("settlement.xa", client.JSON(`{"from":"A","to":"B","amount":100}`))); err != nil {
		log.Fatal(err)
	}
	if err := rm.End(ctx, xid, client.TMSuccess); err != nil {
		log.Fatal(err)
	}
	// Phase 1: prepare (durable; survives a broker restart, listed by Recover).
	rdonly, err := rm.Prepare(ctx, xid)
	if err != nil {
		log.Fatal(err) // *client.XAError: roll back every branch
	}
	// Phase 2: the manager logged its decision; commit.
	if !rdonly {
		positions, err := rm.Commit(ctx, xid, false)
		if err != nil {
			log.Fatal(err) // XAER_RMFAIL: retry Commit later, from Recover
		}
		fmt.Println("committed", len(positions), "message")
	}
	// Output: committed 1 message
}

// A transaction manager's recovery pass after its own restart: finish every branch of its own
// that the broker still holds prepared, as the manager's log says. Recover lists every prepared
// branch on the broker, those of other transaction managers and of Imago's own coordinator
// (global transactions) too: a manager finishes only its own (its format id and the gtrids it
// makes). Rolling back another's branch whose transaction was decided commit half-commits it.
func ExampleXAResource_Recover() {
	ctx := context.Background()
	rm := client.New(imagoURL).NewXAResource()
	xids, err := rm.Recover(ctx)
	if err != nil {
		log.Fatal(err)
	}
	const formatID = 1 // this manager's, as in its Start (ExampleXAResource)
	for _, xid := range xids {
		if xid.FormatID != formatID || !bytes.HasPrefix(xid.Gtrid, []byte("transfer-")) {
			continue // not this manager's branch: leave it to its owner
		}
		committed := false // look xid up in the manager's log: no logged commit, roll back
		if committed {
			_, err = rm.Commit(ctx, xid, false)
		} else {
			err = rm.Rollback(ctx, xid)
		}
		if client.IsXACode(err, client.XAHeurCom) || client.IsXACode(err, client.XAHeurRB) {
			err = rm.Forget(ctx, xid) // an operator decided already
		}
		if err != nil {
			log.Printf("branch %s: %v", xid, err) // XAER_RMFAIL: the next pass tries again
		}
	}
	fmt.Println("recovered")
	// Output: recovered
}

// Server counters, as `imago stats` shows them.
func ExampleClient_Stats() {
	st, err := client.New(imagoURL).Stats(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(st.UptimeSeconds > 0, st.Fsyncs >= 0)
	// Output: true true
}
