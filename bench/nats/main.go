// Command natsbench measures the NATS JetStream baseline that Imago's produce
// path is compared with: 1 KiB messages published to a file-backed stream by a
// fixed number of publishers, each awaiting the stream's ack before sending its
// next message (so exactly -inflight publishes are in flight at any time).
//
// It prints msgs/s, MB/s and the p50/p99 ack latency, or one JSON line with
// -json. scripts/nats-bench.sh runs it against a private nats-server, once with
// `sync_interval: always` (fsync per write) and once with the default, and
// against three clustered servers with -replicas 3.
//
// With -replicas above 1 the stream is replicated; -node name=URL for every
// server lets the publishers connect straight to the stream's leader (as a
// client of Imago's cluster talks to its leader), and -pid name=PID for every
// server makes it print each server's CPU time per acknowledged message over
// the measured run, read from /proc/PID/stat (Linux).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type config struct {
	url      string
	stream   string
	subject  string
	size     int
	inflight int
	duration time.Duration
	warmup   time.Duration
	label    string
	json     bool
	keep     bool
	replicas int
	nodes    namedValues // server name → client URL
	pids     namedValues // server name → process id, for CPU per message
	clkTck   int
}

// serverCPU is one server's CPU time over the measured run.
type serverCPU struct {
	Name     string  `json:"name"`
	Role     string  `json:"role"` // leader, follower (of the stream) or "" when unknown
	Seconds  float64 `json:"cpu_s"`
	UsPerMsg float64 `json:"cpu_us_per_msg"`
}

// result is what one run measured; it is also the -json output.
type result struct {
	Label       string  `json:"label,omitempty"`
	Server      string  `json:"server_version"`
	Stream      string  `json:"stream"`
	Storage     string  `json:"storage"`
	MsgSize     int     `json:"msg_size_bytes"`
	InFlight    int     `json:"inflight"`
	DurationSec float64 `json:"duration_s"`
	Msgs        int64   `json:"msgs"`
	Errors      int64   `json:"errors"`
	MsgsPerSec  float64 `json:"msgs_per_s"`
	MBPerSec    float64 `json:"mb_per_s"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	MaxMs       float64 `json:"max_ms"`
	StreamMsgs  uint64  `json:"stream_msgs"`
	Replicas    int     `json:"replicas"`
	Leader      string  `json:"stream_leader,omitempty"`
	ConnectedTo string  `json:"connected_to,omitempty"`
	// CPU is each -pid server's CPU time over the measured run, leader first.
	CPU []serverCPU `json:"cpu,omitempty"`
	// CPUUsPerMsg is the CPU time of all -pid servers together per acknowledged message.
	CPUUsPerMsg float64 `json:"cpu_us_per_msg_all_servers,omitempty"`
}

func main() {
	var c config
	flag.StringVar(&c.url, "url", "nats://127.0.0.1:4322", "NATS server URL")
	flag.StringVar(&c.stream, "stream", "IMAGO_BENCH", "JetStream stream name (deleted and recreated)")
	flag.StringVar(&c.subject, "subject", "imago.bench", "subject to publish to")
	flag.IntVar(&c.size, "size", 1024, "message payload size in bytes")
	flag.IntVar(&c.inflight, "inflight", 64, "publishes in flight (publishers each awaiting their ack)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "measured duration")
	flag.DurationVar(&c.warmup, "warmup", time.Second, "unmeasured warm-up before the measured duration")
	flag.StringVar(&c.label, "label", "", "label printed with the result")
	flag.BoolVar(&c.json, "json", false, "print one JSON line instead of text")
	flag.BoolVar(&c.keep, "keep", false, "keep the stream after the run")
	flag.IntVar(&c.replicas, "replicas", 1, "stream replicas (needs a JetStream cluster of at least that many servers)")
	c.nodes, c.pids = namedValues{}, namedValues{}
	flag.Var(c.nodes, "node", "server_name=URL of a cluster server (repeat); publishers connect to the stream leader's")
	flag.Var(c.pids, "pid", "server_name=PID of a server process (repeat); prints its CPU time per message")
	flag.IntVar(&c.clkTck, "clk-tck", 100, "clock ticks per second of /proc/PID/stat (getconf CLK_TCK)")
	flag.Parse()
	if c.size <= 0 || c.inflight <= 0 || c.duration <= 0 || c.warmup < 0 || c.replicas < 1 || c.clkTck <= 0 {
		fmt.Fprintln(os.Stderr, "natsbench: -size, -inflight, -duration, -replicas and -clk-tck must be positive, -warmup not negative")
		os.Exit(2)
	}
	r, err := run(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsbench:", err)
		os.Exit(1)
	}
	if c.json {
		b, err := json.Marshal(r)
		if err != nil {
			fmt.Fprintln(os.Stderr, "natsbench:", err)
			os.Exit(1)
		}
		fmt.Println(string(b))
		return
	}
	label := ""
	if r.Label != "" {
		label = r.Label + ": "
	}
	fmt.Printf("%s%.0f msgs/s, %.1f MB/s, ack latency p50 %.2f ms, p99 %.2f ms, max %.2f ms "+
		"(%d msgs of %d B in %.1fs, %d in flight, %s storage, %d replica(s), %d errors, nats-server %s)\n",
		label, r.MsgsPerSec, r.MBPerSec, r.P50Ms, r.P99Ms, r.MaxMs,
		r.Msgs, r.MsgSize, r.DurationSec, r.InFlight, r.Storage, r.Replicas, r.Errors, r.Server)
	for _, s := range r.CPU {
		role := s.Role
		if role == "" {
			role = "server"
		}
		fmt.Printf("  CPU %s %s: %.1f µs/msg (%.2f s)\n", role, s.Name, s.UsPerMsg, s.Seconds)
	}
	if len(r.CPU) > 0 {
		fmt.Printf("  CPU all servers: %.1f µs/msg\n", r.CPUUsPerMsg)
	}
}

// connect connects to url and waits until the connection is up.
func connect(url string) (*nats.Conn, error) {
	connected := make(chan struct{})
	var once sync.Once
	nc, err := nats.Connect(url,
		nats.Name("imago-natsbench"),
		nats.ConnectHandler(func(*nats.Conn) { once.Do(func() { close(connected) }) }),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", url, err)
	}
	select {
	case <-connected:
		return nc, nil
	case <-time.After(15 * time.Second):
		st := nc.Status()
		nc.Close()
		return nil, fmt.Errorf("connect %s: not connected after 15s (status %v)", url, st)
	}
}

// createStream (re)creates the stream. With replicas it retries, each attempt bounded, until ctx
// ends: a JetStream cluster that has just started answers "temporarily unavailable" (or not at
// all) until it has a meta leader and enough servers have joined it.
func createStream(ctx context.Context, js jetstream.JetStream, c config) (jetstream.Stream, error) {
	attempt := func(ctx context.Context) (jetstream.Stream, error) {
		if err := js.DeleteStream(ctx, c.stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("delete stream %s: %w", c.stream, err)
		}
		stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name:      c.stream,
			Subjects:  []string{c.subject},
			Storage:   jetstream.FileStorage,
			Replicas:  c.replicas,
			Retention: jetstream.LimitsPolicy,
		})
		if err != nil {
			return nil, fmt.Errorf("create stream %s with %d replica(s): %w", c.stream, c.replicas, err)
		}
		return stream, nil
	}
	if c.replicas == 1 {
		return attempt(ctx)
	}
	for {
		actx, cancel := context.WithTimeout(ctx, 2*time.Second)
		stream, err := attempt(actx)
		cancel()
		if err == nil {
			return stream, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (still failing when the 30s for setting up ran out)", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func run(c config) (*result, error) {
	cpu, err := newCPUSampler(c.pids)
	if err != nil {
		return nil, err
	}
	nc, err := connect(c.url)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := createStream(ctx, js, c)
	if err != nil {
		return nil, err
	}
	if !c.keep {
		defer func() {
			dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer dcancel()
			_ = js.DeleteStream(dctx, c.stream)
		}()
	}

	// Publish through the stream leader, as a client of a replicated Imago talks to its leader:
	// a publish to a follower would cost that follower a forwarding hop on every message.
	leader := ""
	if info, err := stream.Info(ctx); err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	} else if info.Cluster != nil {
		leader = info.Cluster.Leader
	}
	pub := js
	if u, ok := c.nodes[leader]; ok && nc.ConnectedServerName() != leader {
		lc, err := connect(u)
		if err != nil {
			return nil, fmt.Errorf("connect to stream leader %s: %w", leader, err)
		}
		defer lc.Close()
		if pub, err = jetstream.New(lc); err != nil {
			return nil, err
		}
		nc = lc
	}

	payload := make([]byte, c.size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}

	// Warm-up: same load, not measured (file blocks allocated, connections hot).
	if c.warmup > 0 {
		if _, _, err := publishFor(pub, c, payload, c.warmup); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
		// Start the measured run from an empty stream, so that stream_msgs
		// cross-checks the count of acknowledged publishes.
		if err := stream.Purge(ctx); err != nil {
			return nil, fmt.Errorf("purge after warm-up: %w", err)
		}
	}
	if err := cpu.begin(); err != nil {
		return nil, err
	}
	lat, errs, err := publishFor(pub, c, payload, c.duration)
	if err != nil {
		return nil, err
	}
	cpuSecs, err := cpu.end(c.clkTck)
	if err != nil {
		return nil, err
	}

	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	if info.Cluster != nil && info.Cluster.Leader != leader {
		fmt.Fprintf(os.Stderr, "natsbench: the stream leader changed during the run: %s, then %s\n", leader, info.Cluster.Leader)
		leader = info.Cluster.Leader
	}
	secs := c.duration.Seconds()
	n := int64(len(lat))
	slices.Sort(lat)
	cpuRows, cpuAll := cpuPerMessage(cpuSecs, leader, info, n)
	return &result{
		Label:       c.label,
		Server:      nc.ConnectedServerVersion(),
		Stream:      c.stream,
		Storage:     info.Config.Storage.String(),
		MsgSize:     c.size,
		InFlight:    c.inflight,
		DurationSec: secs,
		Msgs:        n,
		Errors:      errs,
		MsgsPerSec:  float64(n) / secs,
		MBPerSec:    float64(n) * float64(c.size) / secs / 1e6,
		P50Ms:       ms(percentile(lat, 0.50)),
		P99Ms:       ms(percentile(lat, 0.99)),
		MaxMs:       ms(percentile(lat, 1)),
		StreamMsgs:  info.State.Msgs,
		Replicas:    info.Config.Replicas,
		Leader:      leader,
		ConnectedTo: nc.ConnectedServerName(),
		CPU:         cpuRows,
		CPUUsPerMsg: cpuAll,
	}, nil
}

// cpuPerMessage turns each server's CPU seconds into microseconds per acknowledged message,
// the leader first, then the followers by name.
func cpuPerMessage(cpuSecs map[string]float64, leader string, info *jetstream.StreamInfo, msgs int64) ([]serverCPU, float64) {
	if len(cpuSecs) == 0 || msgs == 0 {
		return nil, 0
	}
	followers := map[string]bool{}
	if info.Cluster != nil {
		for _, p := range info.Cluster.Replicas {
			followers[p.Name] = true
		}
	}
	var rows []serverCPU
	total := 0.0
	for name, s := range cpuSecs {
		role := ""
		switch {
		case name == leader:
			role = "leader"
		case followers[name]:
			role = "follower"
		}
		rows = append(rows, serverCPU{Name: name, Role: role, Seconds: s, UsPerMsg: s * 1e6 / float64(msgs)})
		total += s
	}
	slices.SortFunc(rows, func(a, b serverCPU) int {
		if (a.Role == "leader") != (b.Role == "leader") {
			if a.Role == "leader" {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return rows, total * 1e6 / float64(msgs)
}

// publishFor runs c.inflight publishers for d; each publishes one message and
// waits for its ack before the next. It returns the latency of every acked
// publish that started within d, and the number of failed publishes.
func publishFor(js jetstream.JetStream, c config, payload []byte, d time.Duration) ([]time.Duration, int64, error) {
	deadline := time.Now().Add(d)
	var (
		wg       sync.WaitGroup
		errs     atomic.Int64
		firstErr atomic.Value
		perPub   = make([][]time.Duration, c.inflight)
	)
	for i := 0; i < c.inflight; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for {
				start := time.Now()
				if !start.Before(deadline) {
					break
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := js.Publish(ctx, c.subject, payload)
				cancel()
				if err != nil {
					if errs.Add(1) == 1 {
						firstErr.Store(err)
					}
					continue
				}
				lat = append(lat, time.Since(start))
			}
			perPub[i] = lat
		}(i)
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range perPub {
		all = append(all, l...)
	}
	if len(all) == 0 {
		err, _ := firstErr.Load().(error)
		return nil, errs.Load(), fmt.Errorf("no publish was acknowledged (first error: %v)", err)
	}
	if e := errs.Load(); e > 0 {
		fmt.Fprintf(os.Stderr, "natsbench: %d publishes failed, first: %v\n", e, firstErr.Load())
	}
	return all, errs.Load(), nil
}

// percentile returns the q-quantile (nearest rank) of sorted durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
