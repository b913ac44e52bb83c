package outbox_test

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/outbox"
)

// TestOutboxWriterCeiling measures what the writers of TestOutboxFigures reach with no pacing
// (4 and 16 writers, one 1 KiB row per transaction, no relay running): with the table's NOTIFY
// trigger and without any trigger, on each dialect. It is the same-run ceiling of the latency
// phase's write rate. Only with IMAGO_OUTBOX_BENCH=1:
//
//	IMAGO_OUTBOX_BENCH=1 go test -run TestOutboxWriterCeiling -v ./outbox/
func TestOutboxWriterCeiling(t *testing.T) {
	if os.Getenv("IMAGO_OUTBOX_BENCH") != "1" {
		t.Skip("set IMAGO_OUTBOX_BENCH=1 to measure the outbox writer ceiling")
	}
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			e := newDBEnv(t, d)
			variants := []string{"as migrated"}
			if d == outbox.Postgres {
				variants = append(variants, "no trigger")
			}
			for _, v := range variants {
				if v == "no trigger" {
					if _, err := e.db.Exec(`DROP TRIGGER outbox_notify ON ` + e.table); err != nil {
						t.Fatal(err)
					}
				}
				for _, writers := range []int{4, 16} {
					rate, p50, p99 := writeFlat(t, e, writers, 3*time.Second)
					t.Logf("%s, %s, %d writers unpaced: %.0f tx/s, commit latency p50 %.1f ms, p99 %.1f ms", d, v, writers, rate, p50, p99)
				}
			}
		})
	}
}

// writeFlat runs writers that each write one 1 KiB row per transaction as fast as they can
// for dur, and returns transactions/s and the p50/p99 of BEGIN..COMMIT in ms.
func writeFlat(t *testing.T, e *dbEnv, writers int, dur time.Duration) (float64, float64, float64) {
	ctx := context.Background()
	pad := strings.Repeat("x", 990)
	e.db.SetMaxOpenConns(writers + 2)
	e.db.SetMaxIdleConns(writers + 2)
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(dur)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for i := 0; time.Now().Before(end); i++ {
				p, _ := json.Marshal(payload{Key: "k" + strconv.Itoa(w), Seq: i, Pad: pad})
				t0 := time.Now()
				tx, err := e.db.BeginTx(ctx, nil)
				if err == nil {
					err = e.w.Write(ctx, tx, outbox.Message{Topic: "ceiling", Key: "k" + strconv.Itoa(w), Payload: p})
				}
				if err == nil {
					err = tx.Commit()
				}
				if err != nil {
					t.Error(err)
					return
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[min(int(f*float64(len(lat))), len(lat)-1)]) / 1e6 }
	return float64(len(lat)) / secs, q(0.5), q(0.99)
}
