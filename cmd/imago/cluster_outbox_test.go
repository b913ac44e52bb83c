package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/outbox"
)

// TestClusterOutboxRelayMovesWithLeader: in cluster mode the outbox relay runs on the leader
// only. Rows written before and after the leader is killed are all relayed, through whichever
// node leads, exactly once (the new leader's relay republishes what the old one had published
// but not marked under the same keys, which the replicated keys answer duplicate).
func TestClusterOutboxRelayMovesWithLeader(t *testing.T) {
	pg, pgDSN, pgTable, pgW := outboxTable(t, outbox.Postgres)
	c := newTestCluster(t, clusterSeedFor(t))
	source := "orders_" + pgTable[len("imago.outbox_c"):]
	extra := fmt.Sprintf("resources:\n  ledger: {driver: postgres, dsn: %q}\noutbox:\n  - {name: %s, resource: ledger, table: %s}\n", pgDSN, source, pgTable)
	c.appendConfig([]byte(extra))
	c.startAll()
	l := c.waitLeader(20 * time.Second)
	clients := make([]*client.Client, len(c.nodes))
	for i := range c.nodes {
		clients[i] = client.New("http://" + c.client[i].Addr())
	}
	ctx := context.Background()
	if _, err := clients[l].CreateTopic(ctx, "outbox.orders", client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	end := func(i int) int64 {
		info, err := clients[i].DescribeTopic(ctx, "outbox.orders")
		if err != nil {
			return -1 // an election: ask again
		}
		return info.Partitions[0].EndOffset
	}
	writeOutbox(t, pg, pgW, "outbox.orders", 25)
	waitUntil(t, 30*time.Second, "the first rows relayed by the first leader", func() bool { return end(l) == 25 })

	c.nodes[l].kill()
	c.gone[l] = true
	other := (l + 1) % len(c.nodes)
	writeOutbox(t, pg, pgW, "outbox.orders", 25)
	waitUntil(t, 60*time.Second, "the rest relayed by the new leader", func() bool { return end(other) >= 50 })
	nl := c.waitLeader(20 * time.Second)
	// Every row is marked relayed once the backlog is empty; by then a duplicate would show.
	waitUntil(t, 30*time.Second, "the new leader's relay to report no backlog", func() bool {
		resp, err := http.Get("http://" + c.client[nl].Addr() + "/v1/outbox/sources")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var body struct {
			Sources []struct {
				Backlog *int64 `json:"backlog"`
			} `json:"sources"`
		}
		return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&body) == nil &&
			len(body.Sources) == 1 && body.Sources[0].Backlog != nil && *body.Sources[0].Backlog == 0
	})
	if got := end(nl); got != 50 {
		t.Fatalf("end offset %d after 50 rows: a row was relayed twice or lost", got)
	}
}
