package main

// Linearizability test: concurrent producers and fetchers on a few partitions talk to a real
// `imago serve` child through a fault proxy on the client link (internal/faultproxy), while the
// test kills the server with SIGKILL (half the time with a power loss: everything no fsync
// covered is cut away) and restarts it on the same data directory, delays
// traffic, drops connections and blackholes the link for a moment. Every call is recorded
// (internal/linearcheck) and, at the end, each partition's history is checked with porcupine
// against the model of one append-only log with idempotency keys.
//
// Each recorded operation is exactly one HTTP attempt: the client does not retry, and the
// transport does not replay a request body (net/http would otherwise resend a POST carrying an
// Idempotency-Key on a broken kept-alive connection, and the resend's "duplicate" answer would
// belong to an attempt the history does not show). A produce without an answer is retried by
// the test with the same key and the same messages, each attempt its own operation.
//
//	go test ./cmd/imago -run Linearizable -v                  # a few seconds
//	go test ./cmd/imago -run Linearizable -linear.long -v     # a minute, more kills
//	go test ./cmd/imago -run Linearizable -linear.seed 42     # replay the fault schedule

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/faultproxy"
	"github.com/imagomq/imago/internal/linearcheck"
)

var (
	linearLong = flag.Bool("linear.long", false, "linearizability test: a one-minute run with more kills")
	linearSeed = flag.Int64("linear.seed", 0, "linearizability test: random seed (0 picks one and logs it)")
	linearTime = flag.Duration("linear.duration", 0, "linearizability test: run this long, one kill per 3 s (0: the default length)")
)

const (
	linearTopic      = "linear"
	linearPartitions = 3
	linearProducers  = 4
	linearFetchers   = 3
	// linearCallTimeout bounds one attempt; a blackhole longer than this turns calls into
	// unknown outcomes.
	linearCallTimeout = 1500 * time.Millisecond
)

// noReplayTransport makes net/http send each request with a body at most once (see the file
// comment): without GetBody the transport cannot resend it on another connection.
type noReplayTransport struct{ next http.RoundTripper }

func (t noReplayTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil && r.Body != http.NoBody && r.GetBody != nil {
		r = r.Clone(r.Context())
		r.GetBody = nil
	}
	return t.next.RoundTrip(r)
}

// linearRun is the state shared by the load goroutines of one run.
type linearRun struct {
	t     *testing.T
	c     *client.Client
	topic string
	rec   *linearcheck.Recorder
	// values holds every value sent, by message id, to compare fetched bytes with.
	values   sync.Map
	produced atomic.Int64 // acknowledged produce attempts
	unknown  atomic.Int64 // produce attempts without an answer
	fetched  atomic.Int64 // answered fetches
}

func TestLinearizableSingleNode(t *testing.T) {
	// A round is one topic's history: load and faults, then a complete read and the check. The
	// long run is several rounds rather than one long history, because the checker's memory
	// grows with the square of a history's length (a bitset of the history per visited state).
	rounds, duration, kills := 1, 4*time.Second, 2
	if *linearLong {
		rounds, duration, kills = 4, 15*time.Second, 5
	} else if testing.Short() { // the race detector's run (make race)
		duration, kills = 2*time.Second, 1
	}
	if *linearTime > 0 {
		duration, kills = *linearTime, max(1, int(*linearTime/(3*time.Second)))
	}
	seed := *linearSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("linearizability test: %d round(s) of %v with %d kills each, seed %d (rerun with -linear.seed %d)",
		rounds, duration, kills, seed, seed)
	rng := rand.New(rand.NewSource(seed))

	// The server keeps the test-only sync journal, so a kill can also be a power loss: every
	// file cut back to what an fsync covered (internal/powerloss), as crash_powerloss_test does.
	base := t.TempDir()
	dataDir := filepath.Join(base, "data")
	journal := filepath.Join(base, "sync.journal")
	env := []string{envSyncJournal + "=" + journal}
	srv := startServerEnv(t, dataDir, env)
	proxy, err := faultproxy.New(strings.TrimPrefix(srv.URL, "http://"), rng.Int63())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	defer tr.CloseIdleConnections()
	c := client.New("http://"+proxy.Addr(), client.WithRetries(1), client.WithHTTPClient(&http.Client{Transport: noReplayTransport{tr}}))

	start := time.Now()
	var total, produced, unknown, fetched, killed int
	for round := 1; round <= rounds && !t.Failed(); round++ {
		topic := fmt.Sprintf("%s-%d", linearTopic, round)
		if _, err := srv.client().CreateTopic(context.Background(), topic, client.TopicConfig{Partitions: linearPartitions}); err != nil {
			t.Fatalf("create topic %s: %v", topic, err)
		}
		run := &linearRun{t: t, c: c, topic: topic, rec: linearcheck.NewRecorder()}
		killed += run.load(rng, &srv, func(powerLost bool) *serverProc {
			if powerLost {
				loss := powerLoss(t, journal, dataDir)
				t.Logf("power loss: %d files cut back, %d bytes and %d names gone", loss.Truncated, loss.Bytes, len(loss.Removed))
			}
			return startServerEnv(t, dataDir, env)
		}, proxy, duration, kills)
		produced += int(run.produced.Load())
		unknown += int(run.unknown.Load())
		fetched += int(run.fetched.Load())
		total += run.check(seed, round)
	}
	fmt.Printf("linearizability: %d operations checked (%d produces acknowledged, %d without answer, %d fetches) on %d partitions, %d kills, in %v\n",
		total, produced, unknown, fetched, rounds*linearPartitions, killed, time.Since(start).Round(time.Millisecond))
	srv.stop()
}

// load runs the producers and fetchers of one round on r.topic for duration while injecting
// faults, kills among them: kill -9, half of them with a power loss, then restart (*srv is
// the new server); then it heals the proxy and reads every partition whole. It returns the
// number of kills.
func (r *linearRun) load(rng *rand.Rand, srv **serverProc, restart func(powerLost bool) *serverProc, proxy *faultproxy.Proxy, duration time.Duration, kills int) int {
	t := r.t
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < linearProducers; w++ {
		wrng := rand.New(rand.NewSource(rng.Int63()))
		wg.Add(1)
		go func() { defer wg.Done(); r.produce(ctx, w, wrng) }()
	}
	for f := 0; f < linearFetchers; f++ {
		frng := rand.New(rand.NewSource(rng.Int63()))
		wg.Add(1)
		go func() { defer wg.Done(); r.fetch(ctx, linearProducers+f, frng) }()
	}

	// The fault schedule: kills spread over the round, other faults in between.
	start := time.Now()
	killEvery := duration / time.Duration(kills+1)
	nextKill := start.Add(killEvery)
	var done []string
	killed := 0
	for time.Since(start) < duration || killed < kills {
		time.Sleep(150*time.Millisecond + time.Duration(rng.Int63n(int64(350*time.Millisecond))))
		if killed < kills && time.Now().After(nextKill) {
			(*srv).kill()
			powerLost := rng.Intn(2) == 0
			*srv = restart(powerLost)
			proxy.SetTarget(strings.TrimPrefix((*srv).URL, "http://"))
			nextKill = nextKill.Add(killEvery)
			killed++
			if powerLost {
				done = append(done, "kill+powerloss")
			} else {
				done = append(done, "kill")
			}
			continue
		}
		switch rng.Intn(5) {
		case 0:
			proxy.SetDelay(faultproxy.Both, 20*time.Millisecond, 60*time.Millisecond)
			done = append(done, "delay")
		case 1:
			proxy.SetDelay(faultproxy.Backward, 100*time.Millisecond, 0)
			done = append(done, "delay-back")
		case 2:
			proxy.DropConnections()
			done = append(done, "drop")
		case 3:
			// Answers lost: the server applies produces the clients never hear of.
			proxy.Blackhole(faultproxy.Backward)
			time.Sleep(200 * time.Millisecond)
			proxy.DropConnections()
			done = append(done, "blackhole-back")
		case 4:
			proxy.SetRefuse(true)
			time.Sleep(100 * time.Millisecond)
			done = append(done, "refuse")
		}
		time.Sleep(time.Duration(rng.Int63n(int64(300 * time.Millisecond))))
		proxy.Heal()
	}
	stop()
	wg.Wait()
	proxy.Heal()
	t.Logf("%s faults: %s", r.topic, strings.Join(done, " "))

	// A last read of every partition, recorded too, so every stored message is observed.
	for p := 0; p < linearPartitions; p++ {
		r.readToEnd(t, p)
	}
	if r.produced.Load() == 0 || r.fetched.Load() == 0 {
		t.Fatalf("%s: the load did not run: %d produces, %d fetches answered", r.topic, r.produced.Load(), r.fetched.Load())
	}
	return killed
}

// check checks every partition's history of the round and returns the operations checked.
func (r *linearRun) check(seed int64, round int) int {
	t := r.t
	total := 0
	// The final reads of load cover every partition after all producers stopped: a complete read.
	for _, res := range r.rec.CheckAll(2*time.Minute, true) {
		total += res.Ops
		t.Logf("%s partition %d: %d operations (%d left open-ended; %d settled attempts dropped) checked in %v: %s",
			r.topic, res.Partition, res.Ops, res.Open, res.Dropped, res.Took.Round(time.Millisecond), res.Verdict)
		switch res.Verdict {
		case porcupine.Illegal:
			path := filepath.Join(os.TempDir(), fmt.Sprintf("imago-linear-%d-r%d-p%d.html", seed, round, res.Partition))
			if err := porcupine.VisualizePath(linearcheck.Model, res.Info, path); err != nil {
				path = "(visualization failed: " + err.Error() + ")"
			}
			t.Errorf("%s partition %d: history is NOT linearizable (seed %d, round %d, visualization %s)\n%s",
				r.topic, res.Partition, seed, round, path, res.Explain)
		case porcupine.Unknown:
			t.Errorf("%s partition %d: the checker could not decide within its time limit (%d operations, seed %d)",
				r.topic, res.Partition, res.Ops, seed)
		}
		if res.Verdict != porcupine.Ok {
			// The raw history, to check again and study outside this run:
			// LINEARCHECK_HISTORY=path go test ./internal/linearcheck -run SavedHistory -v
			path := filepath.Join(os.TempDir(), fmt.Sprintf("imago-linear-%d-r%d-p%d.json", seed, round, res.Partition))
			if err := linearcheck.SaveHistory(path, r.rec.History(res.Partition)); err != nil {
				t.Logf("save history: %v", err)
			} else {
				t.Logf("%s partition %d: history saved in %s", r.topic, res.Partition, path)
			}
		}
	}
	return total
}

// produce sends requests of 1 to 3 messages to one partition each, with an idempotency key
// (one in eight without), and retries a request without an answer with the same key until it
// gets one or the run ends.
func (r *linearRun) produce(ctx context.Context, w int, rng *rand.Rand) {
	for seq := 0; ctx.Err() == nil; seq++ {
		p := rng.Intn(linearPartitions)
		key := fmt.Sprintf("w%d-%d", w, seq)
		if rng.Intn(8) == 0 {
			key = ""
		}
		n := 1 + rng.Intn(3)
		ids := make([]string, n)
		msgs := make([]client.Message, n)
		for i := range msgs {
			ids[i] = fmt.Sprintf("w%d-%d-%d", w, seq, i)
			v, _ := json.Marshal(map[string]any{"id": ids[i], "pad": strings.Repeat("x", rng.Intn(64))})
			r.values.Store(ids[i], string(v))
			msgs[i] = client.Message{Value: v, Partition: client.Ptr(p)}
		}
		for ctx.Err() == nil {
			call := r.rec.Produce(w, p, key, ids)
			cctx, cancel := context.WithTimeout(context.Background(), linearCallTimeout)
			res, err := r.c.Produce(cctx, r.topic, msgs, client.ProduceOptions{IdempotencyKey: key})
			cancel()
			if err == nil {
				offsets := make([]int64, len(res.Offsets))
				for i, pos := range res.Offsets {
					if pos.Partition != p {
						r.t.Errorf("produce %s: asked for partition %d, stored in %d", key, p, pos.Partition)
					}
					offsets[i] = pos.Offset
				}
				call.Produced(offsets, res.Duplicate)
				r.produced.Add(1)
				break
			}
			var e *client.Error
			if errors.As(err, &e) && e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests {
				call.Failed()
				r.t.Errorf("produce %s refused: %v", key, err)
				break
			}
			call.Unknown() // a timeout, a cut connection, 503 outcome_unknown or any other 5xx
			r.unknown.Add(1)
			if key == "" {
				break // nothing to retry with: the outcome stays open
			}
			sleepCtx(ctx, 20*time.Millisecond)
		}
	}
}

// fetch reads partitions: mostly following its own position in each, sometimes from a random
// offset a little past what it has seen (for 416 answers), sometimes long-polling at the end.
func (r *linearRun) fetch(ctx context.Context, client_ int, rng *rand.Rand) {
	next := make([]int64, linearPartitions)
	for ctx.Err() == nil {
		p := rng.Intn(linearPartitions)
		off := next[p]
		if rng.Intn(4) == 0 {
			off = rng.Int63n(next[p] + 3)
		}
		max := 1 + rng.Intn(5)
		var wait time.Duration
		if rng.Intn(4) == 0 {
			wait = 100 * time.Millisecond
		}
		call := r.rec.Fetch(client_, p, off, max)
		cctx, cancel := context.WithTimeout(context.Background(), linearCallTimeout)
		res, err := r.c.Fetch(cctx, r.topic, p, client.FetchOptions{Offset: off, MaxMessages: max, Wait: wait})
		cancel()
		if err != nil {
			var e *client.Error
			if errors.As(err, &e) && e.Status == http.StatusRequestedRangeNotSatisfiable && e.EndOffset != nil {
				call.OutOfRange(*e.EndOffset)
				r.fetched.Add(1)
				continue
			}
			call.Unknown()
			sleepCtx(ctx, 10*time.Millisecond)
			continue
		}
		ids := r.identify(p, off, res)
		call.Fetched(ids, res.EndOffset)
		r.fetched.Add(1)
		if off+int64(len(ids)) > next[p] {
			next[p] = off + int64(len(ids))
		}
		// A little pacing: fetches are cheap, and without it they make most of the history,
		// which the checker pays for in time and memory (its cache holds a bitset of the
		// whole history per state).
		sleepCtx(ctx, time.Duration(rng.Intn(4))*time.Millisecond)
	}
}

// identify returns the ids of fetched messages, checking each one's bytes against what was
// sent, its partition and offset, and the answer's next_offset.
func (r *linearRun) identify(p int, off int64, res *client.FetchResult) []string {
	ids := make([]string, len(res.Messages))
	for i, m := range res.Messages {
		var v struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(m.Value, &v); err != nil || v.ID == "" {
			r.t.Errorf("partition %d offset %d: value %s is not one the test wrote", p, m.Offset, m.Value)
		}
		ids[i] = v.ID
		if sent, ok := r.values.Load(v.ID); !ok || sent.(string) != string(m.Value) {
			r.t.Errorf("partition %d offset %d: message %s reads back as %s, sent %v", p, m.Offset, v.ID, m.Value, sent)
		}
		if m.Partition != p || m.Offset != off+int64(i) {
			r.t.Errorf("fetch %d@%d: message %d says partition %d offset %d", p, off, i, m.Partition, m.Offset)
		}
	}
	if res.NextOffset != off+int64(len(res.Messages)) {
		r.t.Errorf("fetch %d@%d: %d messages and next_offset %d", p, off, len(res.Messages), res.NextOffset)
	}
	return ids
}

// readToEnd reads partition p from 0 to its end through the healed proxy, recording each
// fetch, with retries for the moment a connection from before the heal fails.
func (r *linearRun) readToEnd(t *testing.T, p int) {
	t.Helper()
	const client_ = linearProducers + linearFetchers
	deadline := time.Now().Add(30 * time.Second)
	for off := int64(0); ; {
		call := r.rec.Fetch(client_, p, off, 100)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, err := r.c.Fetch(ctx, r.topic, p, client.FetchOptions{Offset: off, MaxMessages: 100})
		cancel()
		if err != nil {
			call.Unknown()
			if time.Now().After(deadline) {
				t.Fatalf("final read of partition %d at %d: %v", p, off, err)
			}
			continue
		}
		ids := r.identify(p, off, res)
		call.Fetched(ids, res.EndOffset)
		r.fetched.Add(1)
		off += int64(len(ids))
		if len(ids) == 0 || off >= res.EndOffset {
			return
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
