package outbox_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
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

	"github.com/prometheus/client_golang/prometheus"

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
// IMAGO_OUTBOX_BENCH_N (rows, default 60000), IMAGO_OUTBOX_BENCH_RATE (msgs/s of the latency
// phase, default 2000), IMAGO_OUTBOX_BENCH_WRITERS (the latency phase's paced writers and the
// ceiling's unpaced ones, default 4) and IMAGO_OUTBOX_BENCH_MINPOLL_MS (the relay's MinPoll)
// tune it. Each dialect also prints what the relay asked of the database during the latency
// phase: its reads per second by result, its batches (one completing transaction each) and
// their mean size, and the server's committed transactions per second (the writers' included).
func TestOutboxFigures(t *testing.T) {
	if os.Getenv("IMAGO_OUTBOX_BENCH") != "1" {
		t.Skip("set IMAGO_OUTBOX_BENCH=1 to measure the outbox figures")
	}
	n := envInt("IMAGO_OUTBOX_BENCH_N", 60000)
	rate := envInt("IMAGO_OUTBOX_BENCH_RATE", 2000)
	writers := envInt("IMAGO_OUTBOX_BENCH_WRITERS", 4)
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			f := MeasureOutbox(t, d, n, rate, writers, 5*time.Second)
			t.Logf("%s: relay %d rows of 1 KiB in %.2fs = %.0f msgs/s (batch %d); commit-to-fetchable at %d msgs/s asked (%d writers), %.0f achieved: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d samples)",
				d, f.Rows, f.RelaySeconds, f.RelayRate, f.Batch, rate, writers, float64(f.Samples)/5, f.P50ms, f.P99ms, f.MaxMs, f.Samples)
			serverTx := "" // measured on PostgreSQL only (ServerTx -1 elsewhere)
			if f.ServerTx >= 0 {
				serverTx = fmt.Sprintf("; the server committed %.0f transactions/s", f.ServerTx)
			}
			t.Logf("%s: during the writes the relay (min poll %s) read the outbox %.0f times/s (%.0f with rows, %.0f held, %.0f empty) and completed %.0f batches/s of %.1f rows on average%s",
				d, f.MinPoll, f.Reads["rows"]+f.Reads["held"]+f.Reads["empty"], f.Reads["rows"], f.Reads["held"], f.Reads["empty"], f.Batches, f.RowsPerBatch, serverTx)
			if f.HeldMs >= 0 {
				t.Logf("%s: mean time a committed row spent held back by an older open transaction (txid >= snapshot xmin) %.1f ms, final and not yet removed by the relay (its poll, the batch in flight, the publish, the completing transaction) %.1f ms (Little's law over %d samples)",
					d, f.HeldMs, f.FinalMs, f.Probes)
			}
			if f.BusyCores >= 0 {
				t.Logf("%s: during the writes %.2f of %d cores were busy (this test process, with the broker, relay and consumers: %.2f)", d, f.BusyCores, f.CPUs, f.ProcCores)
			}
			if f.PGCores >= 0 {
				wr := float64(f.Samples) / 5
				t.Logf("%s: PostgreSQL's processes used %.2f cores during the writes: the writers' sessions %.3f (%.0f us per transaction), the relay's session %.3f (%.0f us per batch, %.0f us per row; %.0f%% of the writers')",
					d, f.PGCores, f.WritersPGCores, f.WritersPGCores*1e6/wr, f.RelayPGCores, f.RelayPGCores*1e6/f.Batches, f.RelayPGCores*1e6/(f.Batches*f.RowsPerBatch), 100*f.RelayPGCores/f.WritersPGCores)
			}
			c, p50, p99 := writeFlat(t, newDBEnv(t, d), writers, 3*time.Second)
			t.Logf("%s: same-run writer ceiling (the %d writers unpaced, no relay): %.0f tx/s, commit latency p50 %.1f ms, p99 %.1f ms", d, writers, c, p50, p99)
			if os.Getenv("IMAGO_OUTBOX_BENCH_WATERMILL") == "1" {
				wm := runWatermill(t, d, n)
				t.Logf("%s: watermill forwarder %.0f msgs/s; imago relay / watermill = %.1fx", d, wm, f.RelayRate/wm)
			}
		})
	}
}

// latencyWarmup is how long the latency phase's writers run before its measurement starts.
const latencyWarmup = time.Second

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
	// What the relay asked of the database during the latency phase, per second: reads by
	// result (rows, held, empty), completed batches, and their mean rows; ServerTx is
	// PostgreSQL's committed transactions per second, the writers' included (-1 on MySQL).
	MinPoll      time.Duration
	Reads        map[string]float64
	Batches      float64
	RowsPerBatch float64
	ServerTx     float64
	// PostgreSQL's CPU during the latency phase's writes, in cores (Linux, same machine; else
	// -1): every server process (other clients' included), the relay's session, the writers'.
	PGCores, RelayPGCores, WritersPGCores float64
}

// MeasureOutbox fills an outbox table with rows 1 KiB rows and times the relay draining it,
// then writes at rate msgs/s (one row per transaction, the given number of paced writers) with
// the relay running, for latencyWarmup and then dur, and measures the commit-to-fetchable
// delay of each message committed in dur.
func MeasureOutbox(t *testing.T, dialect string, rows, rate, writers int, dur time.Duration) Figures {
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
	reg := prometheus.NewRegistry()
	opts.Metrics = outbox.NewMetrics(reg)
	// PostgreSQL: the relay's session and the writers' are named, so that their backends' CPU
	// can be told apart from each other and from the rest of the server's.
	relayApp, writersApp, wdb := "", "", e.db
	if dialect == outbox.Postgres {
		relayApp, writersApp = "imago_bench_relay_"+e.source, "imago_bench_writers_"+e.source
		sep := "?"
		if strings.Contains(opts.DSN, "?") {
			sep = "&"
		}
		opts.DSN += sep + "application_name=" + relayApp
		var err error
		if wdb, err = sql.Open("pgx", e.dsn+sep+"application_name="+writersApp); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { wdb.Close() })
		wdb.SetMaxIdleConns(writers)
	}
	start := time.Now()
	r := startRelay(t, opts, outbox.BrokerPublisher{B: b})
	waitFor(t, 10*time.Minute, "the relay to drain the outbox", func() bool { return r.Status().RelayedTotal >= int64(rows) })
	f.RelaySeconds = time.Since(start).Seconds()
	f.RelayRate = float64(rows) / f.RelaySeconds
	if dialect == outbox.MySQL {
		// The drain deleted rows of about 60 MB, which InnoDB purges in the background for up
		// to a second afterwards; meanwhile the relay's DELETEs on the same pages took 10 to
		// 60 ms each. The latency phase measures a relay at rate, so it starts once the purge
		// is done (InnoDB's history list is empty).
		purge := time.Now()
		waitFor(t, time.Minute, "InnoDB to purge the drained rows", func() bool { return innodbHistory(t, e) == 0 })
		t.Logf("%s: InnoDB purged the drained rows %.0f ms after the drain", dialect, 1000*time.Since(purge).Seconds())
	}

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
	var wwg sync.WaitGroup
	per := time.Duration(float64(time.Second) * float64(writers) / float64(rate))
	// The writers run for latencyWarmup before the measured dur: a relay that found the
	// outbox empty after the drain has backed its polls off (up to MaxPoll), and the first
	// rows would measure that back-off, which belongs to an idle relay, not to one at rate.
	// Only rows committed after the warm-up are samples; the counters start there too.
	t0 := time.Now().Add(latencyWarmup)
	end := t0.Add(dur)
	for range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			next := time.Now()
			for time.Now().Before(end) {
				s := int(seq.Add(1))
				tx, err := wdb.BeginTx(ctx, nil)
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
	time.Sleep(time.Until(t0)) // the warm-up's length, not a synchronisation
	seq0 := seq.Load()
	m0, tx0 := gatherCounters(t, reg), serverCommits(t, e)
	pg0 := postgresCPU(t, e, relayApp, writersApp)
	busy0, wall0, proc0 := machineCPU()
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
				// Only the rows after the relay's cursor (those before it are deleted in the
				// transaction that moved it), through the (txid, id) index: a count of the
				// whole table read every deleted row's page 50 times a second, in parallel.
				if err := e.db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE t.txid >= x), count(*) FILTER (WHERE t.txid < x)
					FROM imago.outbox_relay r, `+e.table+` t, pg_snapshot_xmin(pg_current_snapshot()) x
					WHERE r.source = $1 AND (t.txid, t.id) > (r.cursor_txid, r.cursor_id)`, e.source).Scan(&h, &fi); err != nil {
					t.Error(err)
					return
				}
				held, final, probes = held+h, final+fi, probes+1
			}
		}()
	}
	wwg.Wait()
	busy1, wall1, proc1 := machineCPU()
	m1, tx1, secs := gatherCounters(t, reg), serverCommits(t, e), time.Since(t0).Seconds()
	pg1 := postgresCPU(t, e, relayApp, writersApp)
	f.PGCores, f.RelayPGCores, f.WritersPGCores = -1, -1, -1
	if pg0 != nil && pg1 != nil {
		f.PGCores = (pg1[""] - pg0[""]) / secs
		f.RelayPGCores = (pg1[relayApp] - pg0[relayApp]) / secs
		f.WritersPGCores = (pg1[writersApp] - pg0[writersApp]) / secs
	}
	f.MinPoll = opts.MinPoll
	if f.MinPoll == 0 {
		f.MinPoll = outbox.DefaultMinPoll
	}
	f.Reads = map[string]float64{}
	for _, res := range []string{"rows", "held", "empty"} {
		k := "imago_outbox_reads_total/" + res
		f.Reads[res] = (m1[k] - m0[k]) / secs
	}
	f.Batches = (m1["imago_outbox_batches_total"] - m0["imago_outbox_batches_total"]) / secs
	if f.Batches > 0 {
		f.RowsPerBatch = (m1["imago_outbox_relayed_total"] - m0["imago_outbox_relayed_total"]) / secs / f.Batches
	}
	f.ServerTx = -1
	if tx0 >= 0 {
		f.ServerTx = float64(tx1-tx0) / secs
	}
	f.CPUs, f.BusyCores, f.ProcCores = runtime.NumCPU(), -1, -1
	if wall1 > wall0 && busy0 >= 0 {
		f.BusyCores = (busy1 - busy0) / (wall1 - wall0) * float64(f.CPUs)
		f.ProcCores = (proc1 - proc0) / (wall1 - wall0) * float64(f.CPUs)
	}
	pwg.Wait()
	written := int(seq.Load()) - rows
	if probes > 0 {
		r := float64(seq.Load()-seq0) / dur.Seconds() / 1000 // rows per ms
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
		if at, ok := fetched[k.(int)]; ok && !v.(time.Time).Before(t0) {
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

// gatherCounters returns the relay's counters in reg by name (and result label, as
// "name/result").
func gatherCounters(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if m.GetCounter() == nil {
				continue
			}
			k := mf.GetName()
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					k += "/" + l.GetValue()
				}
			}
			out[k] += m.GetCounter().GetValue()
		}
	}
	return out
}

// postgresCPU returns the CPU seconds used so far by the backends of the sessions named in
// apps (by application name) and, under "", by every PostgreSQL server process on this
// machine; nil where /proc or a local server is missing. Backends that end in between are not
// counted.
func postgresCPU(t *testing.T, e *dbEnv, apps ...string) map[string]float64 {
	t.Helper()
	if apps[0] == "" {
		return nil
	}
	rows, err := e.db.Query(`SELECT pid, application_name FROM pg_stat_activity WHERE application_name = ANY($1)`, apps)
	if err != nil {
		t.Fatal(err)
	}
	app := map[int]string{}
	for rows.Next() {
		var pid int
		var name string
		if err := rows.Scan(&pid, &name); err != nil {
			t.Fatal(err)
		}
		app[pid] = name
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	found := 0
	for _, ent := range ents {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + ent.Name() + "/comm"); err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		c := procCPU(p)
		out[""] += c
		if name, ok := app[p]; ok {
			out[name] += c
			found++
		}
	}
	if found == 0 {
		t.Logf("no backend of %v is a local postgres process", apps)
		return nil
	}
	return out
}

// procCPU returns the user+system CPU seconds of process pid (0 if it is gone).
func procCPU(pid int) float64 {
	sb, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	_, rest, ok := strings.Cut(string(sb), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100 // USER_HZ is 100 on Linux
}

// innodbHistory is InnoDB's history list length: undo logs of committed transactions that
// the purge has not yet processed.
func innodbHistory(t *testing.T, e *dbEnv) int64 {
	t.Helper()
	var name string
	var n int64
	if err := e.db.QueryRow(`SHOW GLOBAL STATUS LIKE 'Innodb_history_list_length'`).Scan(&name, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// serverCommits returns PostgreSQL's committed transactions in the test database so far
// (pg_stat_database, which backends update about once a second), or -1 on MySQL.
func serverCommits(t *testing.T, e *dbEnv) int64 {
	t.Helper()
	if e.dialect != outbox.Postgres {
		return -1
	}
	var n int64
	if err := e.db.QueryRow(`SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
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
