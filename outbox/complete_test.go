package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/outbox"
)

// hookPublisher runs before once, before the first publish, then publishes to next.
type hookPublisher struct {
	next   outbox.Publisher
	once   sync.Once
	before func()
}

func (p *hookPublisher) Publish(ctx context.Context, topic string, msgs []outbox.Message, key string) error {
	p.once.Do(p.before)
	return p.next.Publish(ctx, topic, msgs, key)
}

// TestCompleteRemovesOnlyPublishedRows: a row that lands inside a batch's id range while the
// batch is being published (a gap misjudged, or passed by the GapGrace fallback) was not
// published. Completing the batch must not delete or mark it; the relay stops loudly instead
// of passing it, and the row stays in the outbox for the operator.
func TestCompleteRemovesOnlyPublishedRows(t *testing.T) {
	for _, mode := range []outbox.Mode{outbox.ModeDelete, outbox.ModeMark} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			e := newDBEnv(t, outbox.MySQL)
			topic := uniqueName(t, "t.")
			b := openBroker(t, topic, 1)
			ctx := context.Background()
			ins := func(id int64, seq int) {
				t.Helper()
				p, _ := json.Marshal(payload{Key: "k", Seq: seq})
				if _, err := e.db.ExecContext(ctx, "INSERT INTO "+e.table+" (id, topic, `key`, payload) VALUES (?, ?, 'k', ?)", id, topic, p); err != nil {
					t.Fatal(err)
				}
			}
			ins(1, 1)
			ins(3, 3)
			// A batch (0, 3] claimed by an earlier relay: the takeover republishes it as is.
			if _, err := e.db.ExecContext(ctx, `INSERT INTO imago_outbox_relay (source, cursor_id, claim_id) VALUES (?, 0, 3)`, e.source); err != nil {
				t.Fatal(err)
			}
			pub := &hookPublisher{next: outbox.BrokerPublisher{B: b}, before: func() { ins(2, 2) }}
			opts := e.relayOptions()
			opts.Mode = mode
			r, err := outbox.New(opts, pub)
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- r.Run(rctx) }()
			var runErr error
			waitFor(t, 15*time.Second, "the batch completed or the relay stopped", func() bool {
				select {
				case runErr = <-done:
					return true
				default:
					return r.Status().RelayedTotal > 0
				}
			})
			published := map[int]bool{}
			for _, m := range fetchAllBroker(t, b, topic) {
				published[m.p.Seq] = true
			}
			var left int
			if err := e.db.QueryRow(`SELECT COUNT(*) FROM ` + e.table + ` WHERE id = 2 AND relayed_at IS NULL`).Scan(&left); err != nil {
				t.Fatal(err)
			}
			if !published[2] && left != 1 {
				t.Fatalf("row 2 was removed or marked without being published (published %v)", published)
			}
			if runErr == nil || !errors.Is(runErr, outbox.ErrPermanent) {
				t.Fatalf("relay did not stop loudly: Run returned %v", runErr)
			}
			t.Logf("relay stopped: %v", runErr)
		})
	}
}
