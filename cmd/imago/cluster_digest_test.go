package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/client"
)

// TestClusterIDReusedOnNewLeader: the request digest rides in the replicated decision records,
// so after the leader (which runs the coordinator) is killed, the new leader's coordinator
// still refuses a repeat of the client id with another amount (409 idempotency_key_reused,
// nothing moved) and answers the exact repeat as the duplicate it is.
func TestClusterIDReusedOnNewLeader(t *testing.T) {
	seed := clusterSeedFor(t)
	sfx := gbankSuffix(t)
	n := gbankNames{wallet: "gdg_w_" + sfx, wjournal: "gdg_wj_" + sfx, ledger: "gdg_l_" + sfx, ljournal: "gdg_lj_" + sfx, topic: "gdigest." + sfx}
	my, pg := gbankDBs(t, n)
	extra, err := os.ReadFile(gbankConfig(t, t.TempDir(), n, ""))
	if err != nil {
		t.Fatal(err)
	}
	c := newTestCluster(t, seed)
	c.appendConfig(extra)
	c.startAll()
	l := c.waitLeader(20 * time.Second)
	url := func(i int) string { return "http://" + c.client[i].Addr() }
	if _, err := client.New(url(l)).CreateTopic(context.Background(), n.topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	transfer := func(amount int64) []byte {
		key := "t-2"
		body, _ := json.Marshal(api.GlobalTxRequest{ID: "t-2", TimeoutMS: 5000, Steps: []api.GlobalTxStep{
			{Resource: "wallet", Operation: "move", Params: map[string]any{"account": "m0", "delta": -amount}},
			{Resource: "ledger", Operation: "move", Params: map[string]any{"account": "p0", "delta": amount}},
		}, Messages: []api.TxMessage{{Topic: n.topic, ProduceMessage: api.ProduceMessage{Key: &key,
			Value: json.RawMessage(fmt.Sprintf(`{"amount": %d}`, amount))}}}})
		return body
	}
	// post sends body to node i until an answer other than 503 (no leader yet, or the new
	// leader's coordinator still opening).
	post := func(i int, body []byte) (int, []byte) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := http.Post(url(i)+"/v1/global-transactions", "application/json", bytes.NewReader(body))
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusServiceUnavailable {
					return resp.StatusCode, b
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no answer but 503 from node %d: %v", i+1, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	balances := func() [2]int64 {
		var out [2]int64
		if err := my.QueryRow("SELECT balance FROM " + n.wallet + " WHERE id = 'm0'").Scan(&out[0]); err != nil {
			t.Fatal(err)
		}
		if err := pg.QueryRow("SELECT balance FROM " + n.ledger + " WHERE id = 'p0'").Scan(&out[1]); err != nil {
			t.Fatal(err)
		}
		return out
	}

	if st, b := post(l, transfer(5)); st != http.StatusOK {
		t.Fatalf("transfer: %d %s", st, b)
	}
	want := balances()
	if want != [2]int64{gbankInitial - 5, gbankInitial + 5} {
		t.Fatalf("balances after the transfer: %v", want)
	}
	c.nodes[l].kill()
	nl := c.waitNewLeader(l, 20*time.Second)

	st, b := post(nl, transfer(7))
	var eb api.ErrorResponse
	_ = json.Unmarshal(b, &eb)
	if st != http.StatusConflict || eb.Error.Code != "idempotency_key_reused" {
		t.Fatalf("id reused for another amount on the new leader: %d %s", st, b)
	}
	if got := balances(); got != want {
		t.Fatalf("the refused repeat moved money: %v, want %v", got, want)
	}
	st, b = post(nl, transfer(5))
	var res api.GlobalTxResult
	_ = json.Unmarshal(b, &res)
	if st != http.StatusOK || !res.Duplicate || res.Status != "committed" {
		t.Fatalf("exact repeat on the new leader: %d %s", st, b)
	}
	if got := balances(); got != want {
		t.Fatalf("the exact repeat moved money: %v, want %v", got, want)
	}
}
