package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagomq/imago/outbox"
)

// TestRelayCadence: while rows keep coming, the relay reads and completes at most one batch
// per MinPoll however few rows it holds (what it costs the database is per batch), and a
// backlog of full batches drains without waiting MinPoll between them. Every row arrives
// once, in per-key order, either way.
func TestRelayCadence(t *testing.T) {
	for _, d := range dialects {
		t.Run(d+"/backlog", func(t *testing.T) {
			t.Parallel()
			e := newDBEnv(t, d)
			topic := uniqueName(t, "t.")
			b := openBroker(t, topic, 2)
			ctx := context.Background()
			l := newLedger()
			for i := range 12 { // 12 transactions of 10 rows: 12 full batches of 10
				key := []string{"a", "b"}[i%2]
				seqs := make([]int, 10)
				for j := range seqs {
					seqs[j] = i*10 + j
				}
				if err := e.writeTx(ctx, topic, key, seqs, true); err != nil {
					t.Fatal(err)
				}
				l.add(key, seqs, true)
			}
			opts := e.relayOptions()
			opts.BatchSize = 10
			opts.MinPoll, opts.MaxPoll, opts.SessionTimeout = 2*time.Second, 2*time.Second, 10*time.Second
			start := time.Now()
			r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
			waitFor(t, time.Minute, "the backlog relayed", func() bool { return r.Status().RelayedTotal == int64(l.total()) })
			// Paced, the 12 batches would take at least 11 × MinPoll = 22 s.
			if took := time.Since(start); took > 10*time.Second {
				t.Errorf("12 full batches took %s: the relay waited MinPoll (%s) between full batches", took, opts.MinPoll)
			}
			l.check(t, fetchAllBroker(t, b, topic))
		})
		t.Run(d+"/stream", func(t *testing.T) {
			t.Parallel()
			e := newDBEnv(t, d)
			topic := uniqueName(t, "t.")
			b := openBroker(t, topic, 2)
			ctx := context.Background()
			l := newLedger()
			reg := prometheus.NewRegistry()
			opts := e.relayOptions()
			opts.MinPoll, opts.MaxPoll = 250*time.Millisecond, 250*time.Millisecond
			opts.Metrics = outbox.NewMetrics(reg)
			r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
			waitFor(t, 30*time.Second, "the relay active", func() bool { return r.Status().Active })
			// One row per transaction, about every 5 ms, for 2 s.
			start := time.Now()
			for i := 0; time.Since(start) < 2*time.Second; i++ {
				key := []string{"a", "b", "c"}[i%3]
				if err := e.writeTx(ctx, topic, key, []int{i}, true); err != nil {
					t.Fatal(err)
				}
				l.add(key, []int{i}, true)
				time.Sleep(5 * time.Millisecond) // pacing the writer, not synchronisation
			}
			waitFor(t, time.Minute, "the stream relayed", func() bool { return r.Status().RelayedTotal == int64(l.total()) })
			took := time.Since(start)
			batches := gatherCounters(t, reg)["imago_outbox_batches_total"]
			// At most one batch per MinPoll, and one more for the read that was under way when
			// the first row committed (reading again at once after each batch made one of every
			// few rows: over a hundred here).
			if most := took.Seconds()/opts.MinPoll.Seconds() + 2; batches > most {
				t.Errorf("%d rows in %.0f batches over %s: want at most %.0f (one per MinPoll %s)", l.total(), batches, took.Round(time.Millisecond), most, opts.MinPoll)
			}
			t.Logf("%d rows in %.0f batches over %s", l.total(), batches, took.Round(time.Millisecond))
			l.check(t, fetchAllBroker(t, b, topic))
		})
	}
}
