package outbox_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/outbox"
)

// TestOutboxFigures measures, in one run, the relay's sustained throughput (1 KiB payloads,
// from a pre-filled outbox into an in-process broker with fsync always) and the delay from a
// writer's commit to the message being fetchable at a moderate write rate, for PostgreSQL and
// MariaDB; with IMAGO_OUTBOX_BENCH_WATERMILL=1 it also runs Watermill's SQL forwarder
// (bench/watermill, a module of its own) on the same database right after, for the ratio.
// Each dialect also prints the same-run ceiling of the latency phase's writers (the same 4
// writers unpaced, no relay: the rate the machine allows them then), and PostgreSQL the mean
// split of the delay between the snapshot xmin and the relay.
// It runs only with IMAGO_OUTBOX_BENCH=1 (not in CI):
//
//	IMAGO_OUTBOX_BENCH=1 IMAGO_OUTBOX_BENCH_WATERMILL=1 go test -run TestOutboxFigures -v -timeout 30m ./outbox/
//
// IMAGO_OUTBOX_BENCH_N (rows, default 60000) and IMAGO_OUTBOX_BENCH_RATE (msgs/s of the latency
// phase, default 2000) tune it.
func TestOutboxFigures(t *testing.T) {
	if os.Getenv("IMAGO_OUTBOX_BENCH") != "1" {
		t.Skip("set IMAGO_OUTBOX_BENCH=1 to measure the outbox figures")
	}
	n := envInt("IMAGO_OUTBOX_BENCH_N", 60000)
	rate := envInt("IMAGO_OUTBOX_BENCH_RATE", 2000)
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			f := MeasureOutbox(t, d, n, rate, 5*time.Second)
			t.Logf("%s: relay %d rows of 1 KiB in %.2fs = %.0f msgs/s (batch %d); commit-to-fetchable at %d msgs/s asked, %.0f achieved: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d samples)",
				d, f.Rows, f.RelaySeconds, f.RelayRate, f.Batch, rate, float64(f.Samples)/5, f.P50ms, f.P99ms, f.MaxMs, f.Samples)
			if f.HeldMs >= 0 {
				t.Logf("%s: mean time a committed row spent held back by an older open transaction (txid >= snapshot xmin) %.1f ms, final and not yet removed by the relay (its poll, the batch in flight, the publish, the completing transaction) %.1f ms (Little's law over %d samples)",
					d, f.HeldMs, f.FinalMs, f.Probes)
			}
			if f.BusyCores >= 0 {
				t.Logf("%s: during the writes %.2f of %d cores were busy (this test process, with the broker, relay and consumers: %.2f)", d, f.BusyCores, f.CPUs, f.ProcCores)
			}
			c, p50, p99 := writeFlat(t, newDBEnv(t, d), 4, 3*time.Second)
			t.Logf("%s: same-run writer ceiling (the 4 writers unpaced, no relay): %.0f tx/s, commit latency p50 %.1f ms, p99 %.1f ms", d, c, p50, p99)
			if os.Getenv("IMAGO_OUTBOX_BENCH_WATERMILL") == "1" {
				wm := runWatermill(t, d, n)
				t.Logf("%s: watermill forwarder %.0f msgs/s; imago relay / watermill = %.1fx", d, wm, f.RelayRate/wm)
			}
		})
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// Figures are the outbox measurements of one dialect.
type Figures struct {
	Rows                int
	Batch               int
	RelaySeconds        float64
	RelayRate           float64
	Samples             int
	P50ms, P99ms, MaxMs float64
	// PostgreSQL only (else -1): mean ms a committed row spent with txid >= the snapshot's
	// xmin (held back by an older open transaction), and final but not yet relayed, from
	// counts sampled every 20 ms during the latency phase (Little's law: count / rate).
	HeldMs, FinalMs float64
	Probes          int
	// Machine CPU during the latency phase's writes (Linux /proc/stat; -1 elsewhere): cores
	// busy on average (of CPUs), and this test process's share of them.
	BusyCores, ProcCores float64
	CPUs                 int
}

// MeasureOutbox fills an outbox table with rows 1 KiB rows and times the relay draining it,
// then writes at rate msgs/s for dur (one row per transaction, 4 writers) with the relay
// running and measures each message's commit-to-fetchable delay.
func MeasureOutbox(t *testing.T, dialect string, rows, rate int, dur time.Duration) Figures {
	e := newDBEnv(t, dialect)
	ctx := context.Background()
	topic := uniqueName(t, "bench.")
	b := openBroker(t, topic, 8)
	pad := strings.Repeat("x", 990) // payloads of about 1 KiB (1010 to 1020 bytes)
	mk := func(seq int) outbox.Message {
		p, _ := json.Marshal(payload{Key: "k" + strconv.Itoa(seq%64), Seq: seq, Pad: pad})
		return outbox.Message{Topic: topic, Key: "k" + strconv.Itoa(seq%64), Payload: p}
	}
	// Fill: transactions of 500 rows.
	for done := 0; done < rows; {
		k := min(500, rows-done)
		msgs := make([]outbox.Message, k)
		for i := range msgs {
			msgs[i] = mk(done + i)
		}
		tx, err := e.db.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.w.Write(ctx, tx, msgs...); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		done += k
	}
	runtime.GC()
	f := Figures{Rows: rows, Batch: 1000}
	opts := e.relayOptions()
	opts.BatchSize = f.Batch
	if v := envInt("IMAGO_OUTBOX_BENCH_MINPOLL_MS", 0); v > 0 {
		opts.MinPoll = time.Duration(v) * time.Millisecond
	}
	start := time.Now()
	r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
	waitFor(t, 10*time.Minute, "the relay to drain the outbox", func() bool { return r.Status().RelayedTotal >= int64(rows) })
	f.RelaySeconds = time.Since(start).Seconds()
	f.RelayRate = float64(rows) / f.RelaySeconds

	// Latency: consumers long-poll every partition from the current end.
	info, err := b.Topic(topic)
	if err != nil {
		t.Fatal(err)
	}
	var commits sync.Map // seq -> commit time
	var mu sync.Mutex
	fetched := map[int]time.Time{}
	cctx, cancel := context.WithCancel(ctx)
	var cwg sync.WaitGroup
	for p, pi := range info.Partitions {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			off := pi.EndOffset
			for cctx.Err() == nil {
				res, err := b.Fetch(cctx, topic, p, broker.FetchOptions{Offset: off, MaxMessages: 1000, Wait: 200 * time.Millisecond})
				if err != nil {
					return
				}
				now := time.Now()
				for _, m := range res.Messages {
					var pl payload
					if json.Unmarshal(m.Value, &pl) != nil {
						continue
					}
					mu.Lock()
					fetched[pl.Seq] = now
					mu.Unlock()
				}
				off = res.NextOffset
			}
		}()
	}
	var seq atomic.Int64
	seq.Store(int64(rows))
	const writers = 4
	var wwg sync.WaitGroup
	per := time.Duration(float64(time.Second) * writers / float64(rate))
	busy0, wall0, proc0 := machineCPU()
	end := time.Now().Add(dur)
	for range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			next := time.Now()
			for time.Now().Before(end) {
				s := int(seq.Add(1))
				tx, err := e.db.BeginTx(ctx, nil)
				if err == nil {
					err = e.w.Write(ctx, tx, mk(s))
				}
				if err == nil {
					err = tx.Commit()
				}
				if err != nil {
					t.Error(err)
					return
				}
				commits.Store(s, time.Now())
				next = next.Add(per)
				if d := time.Until(next); d > 0 {
					time.Sleep(d) // pacing the writers, not synchronisation
				}
			}
		}()
	}
	// PostgreSQL: sample how many committed rows are held back by the snapshot xmin and how
	// many are final but still in the table (the relay deletes a row when its batch completes).
	f.HeldMs, f.FinalMs = -1, -1
	var held, final, probes int64
	var pwg sync.WaitGroup
	if dialect == outbox.Postgres {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			tk := time.NewTicker(20 * time.Millisecond) // light: the probe shares the CPUs with the writers
			defer tk.Stop()
			for time.Now().Before(end) {
				<-tk.C
				var h, fi int64
				if err := e.db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE txid >= x), count(*) FILTER (WHERE txid < x)
					FROM `+e.table+`, pg_snapshot_xmin(pg_current_snapshot()) x`).Scan(&h, &fi); err != nil {
					t.Error(err)
					return
				}
				held, final, probes = held+h, final+fi, probes+1
			}
		}()
	}
	wwg.Wait()
	busy1, wall1, proc1 := machineCPU()
	f.CPUs, f.BusyCores, f.ProcCores = runtime.NumCPU(), -1, -1
	if wall1 > wall0 && busy0 >= 0 {
		f.BusyCores = (busy1 - busy0) / (wall1 - wall0) * float64(f.CPUs)
		f.ProcCores = (proc1 - proc0) / (wall1 - wall0) * float64(f.CPUs)
	}
	pwg.Wait()
	written := int(seq.Load()) - rows
	if probes > 0 {
		r := float64(written) / dur.Seconds() / 1000 // rows per ms
		f.HeldMs, f.FinalMs, f.Probes = float64(held)/float64(probes)/r, float64(final)/float64(probes)/r, int(probes)
	}
	waitFor(t, time.Minute, "every written message to be fetched", func() bool {
		mu.Lock()
		defer mu.Unlock()
		all := len(fetched) >= written
		commits.Range(func(k, _ any) bool {
			_, ok := fetched[k.(int)]
			all = all && ok
			return all
		})
		return all
	})
	cancel()
	cwg.Wait()
	var delays []time.Duration
	commits.Range(func(k, v any) bool {
		if at, ok := fetched[k.(int)]; ok {
			delays = append(delays, max(at.Sub(v.(time.Time)), 0))
		}
		return true
	})
	slices.Sort(delays)
	ms := func(q float64) float64 {
		return float64(delays[min(int(q*float64(len(delays))), len(delays)-1)]) / 1e6
	}
	f.Samples, f.P50ms, f.P99ms, f.MaxMs = len(delays), ms(0.50), ms(0.99), ms(1)
	return f
}

// runWatermill runs bench/watermill on the same database and returns its rate.
func runWatermill(t *testing.T, dialect string, n int) float64 {
	t.Helper()
	dsn := testenvDSN(t, dialect)
	dir, err := filepath.Abs("../bench/watermill")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", ".", "-dialect", dialect, "-dsn", dsn, "-n", strconv.Itoa(n))
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench/watermill: %v", err)
	}
	var res struct {
		Rate float64 `json:"msgs_per_sec"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("bench/watermill output %q: %v", out, err)
	}
	return res.Rate
}

func testenvDSN(t *testing.T, dialect string) string {
	if dialect == outbox.Postgres {
		return pgDSN(t)
	}
	return myDSN(t)
}

// machineCPU reads /proc/stat: busy and total jiffies of all CPUs, and this process's user+sys
// jiffies (from /proc/self/stat), all in the same unit; busy is -1 where /proc is missing.
func machineCPU() (busy, total, proc float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1, 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	for i, v := range fields[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	if sb, err := os.ReadFile("/proc/self/stat"); err == nil {
		if _, rest, ok := strings.Cut(string(sb), ") "); ok {
			if f := strings.Fields(rest); len(f) > 12 {
				u, _ := strconv.ParseFloat(f[11], 64)
				s, _ := strconv.ParseFloat(f[12], 64)
				proc = u + s
			}
		}
	}
	return busy, total, proc
}
