// Command natsbench measures the NATS JetStream baseline that Imago's produce
// path is compared with: 1 KiB messages published to a file-backed stream by a
// fixed number of publishers, each awaiting the stream's ack before sending its
// next message (so exactly -inflight publishes are in flight at any time).
//
// It prints msgs/s, MB/s and the p50/p99 ack latency, or one JSON line with
// -json. scripts/nats-bench.sh runs it against a private nats-server, once with
// `sync_interval: always` (fsync per write) and once with the default.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
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
	flag.Parse()
	if c.size <= 0 || c.inflight <= 0 || c.duration <= 0 || c.warmup < 0 {
		fmt.Fprintln(os.Stderr, "natsbench: -size, -inflight and -duration must be positive, -warmup not negative")
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
		"(%d msgs of %d B in %.1fs, %d in flight, %s storage, %d errors, nats-server %s)\n",
		label, r.MsgsPerSec, r.MBPerSec, r.P50Ms, r.P99Ms, r.MaxMs,
		r.Msgs, r.MsgSize, r.DurationSec, r.InFlight, r.Storage, r.Errors, r.Server)
}

func run(c config) (*result, error) {
	connected := make(chan struct{})
	var once sync.Once
	nc, err := nats.Connect(c.url,
		nats.Name("imago-natsbench"),
		nats.ConnectHandler(func(*nats.Conn) { once.Do(func() { close(connected) }) }),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond),
		nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", c.url, err)
	}
	defer nc.Close()
	select {
	case <-connected:
	case <-time.After(15 * time.Second):
		return nil, fmt.Errorf("connect %s: not connected after 15s (status %v)", c.url, nc.Status())
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, c.stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("delete stream %s: %w", c.stream, err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:      c.stream,
		Subjects:  []string{c.subject},
		Storage:   jetstream.FileStorage,
		Replicas:  1,
		Retention: jetstream.LimitsPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", c.stream, err)
	}
	if !c.keep {
		defer func() {
			dctx, dcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer dcancel()
			_ = js.DeleteStream(dctx, c.stream)
		}()
	}

	payload := make([]byte, c.size)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}

	// Warm-up: same load, not measured (file blocks allocated, connections hot).
	if c.warmup > 0 {
		if _, _, err := publishFor(js, c, payload, c.warmup); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
		// Start the measured run from an empty stream, so that stream_msgs
		// cross-checks the count of acknowledged publishes.
		if err := stream.Purge(ctx); err != nil {
			return nil, fmt.Errorf("purge after warm-up: %w", err)
		}
	}
	lat, errs, err := publishFor(js, c, payload, c.duration)
	if err != nil {
		return nil, err
	}

	info, err := stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	secs := c.duration.Seconds()
	n := int64(len(lat))
	slices.Sort(lat)
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
	}, nil
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
