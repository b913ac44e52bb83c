package outbox_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/imagomq/imago/outbox"
)

// TestPostgresTxidDigitBoundary: commit order is (txid, id) as numbers. Transaction ids gain
// a digit now and then (9999 -> 10000, 9999999 -> 10000000); ordered as text, "1000" sorts
// before "999", so a relay that sorted by the text of the txid would publish the later row
// first and leave (or, completing by range, delete) the earlier one. The rows carry old
// transaction ids set by hand, below every running transaction, as a busy cluster's would be.
func TestPostgresTxidDigitBoundary(t *testing.T) {
	for _, batch := range []int{1, 1000} {
		t.Run(map[int]string{1: "one row a batch", 1000: "one batch"}[batch], func(t *testing.T) {
			t.Parallel()
			e := newDBEnv(t, outbox.Postgres)
			topic := uniqueName(t, "t.")
			b := openBroker(t, topic, 1)
			ctx := context.Background()
			l := newLedger()
			for i, txid := range []string{"998", "999", "1000", "1001"} {
				p, _ := json.Marshal(payload{Key: "k", Seq: i})
				if _, err := e.db.ExecContext(ctx, `INSERT INTO `+e.table+` (txid, topic, key, payload) VALUES ($1::text::xid8, $2, 'k', $3)`,
					txid, topic, p); err != nil {
					t.Fatal(err)
				}
				l.add("k", []int{i}, true)
			}
			opts := e.relayOptions()
			opts.BatchSize = batch
			r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
			waitFor(t, 15*time.Second, "the rows relayed", func() bool { return e.rowsLeft(t) == 0 || r.Status().LastError != "" })
			if err := r.Status().LastError; err != "" {
				t.Fatalf("relay: %s", err)
			}
			l.check(t, fetchAllBroker(t, b, topic))
		})
	}
}
