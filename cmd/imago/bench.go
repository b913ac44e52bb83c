package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/spf13/cobra"
)

func newBenchCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure a running server (produce, fetch) or the disk",
		Long: `Load generators for the figures Imago is held to.

'bench produce' and 'bench fetch' drive a running server (--server) over HTTP/1.1 with
--connections keep-alive connections, one request in flight on each. The client is a lean
one written for this purpose (pre-built request bytes, minimal response parsing) so that on
a small machine the server, not the load generator, gets the CPU. 'bench disk' measures the
raw sequential write rate of a directory with an fsync per MiB, the ceiling for durable
produce. 'bench xa' and 'bench put' measure XA branches and the text protocol against a
running server; 'bench offsets' measures offset commits into a database (--dsn), group
commit against one UPDATE per commit.

At the end each prints requests, msgs/s, MB/s (MB = 10^6 bytes) and p50/p99/p999 latency;
--json prints one JSON line instead. A live progress line goes to stderr each second when
stderr is a terminal (--progress always|never to force).`,
		Example: `  imago bench produce --connections 64 --message-bytes 1024 --duration 10s
  imago bench produce --batch 100 --json
  imago bench fetch --fill-bytes 1GiB
  imago bench disk --dir ./data`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("bench needs a subcommand: produce, fetch, disk, xa, put or offsets")
		},
	}
	cmd.AddCommand(newBenchProduceCmd(a), newBenchFetchCmd(a), newBenchDiskCmd(a), newBenchXACmd(a), newBenchPutCmd(a), newBenchOffsetsCmd(a))
	return cmd
}

// benchCommon are the flags every bench subcommand has.
type benchCommon struct {
	duration time.Duration
	json     bool
	progress string
}

func (c *benchCommon) register(cmd *cobra.Command, duration time.Duration, what string) {
	cmd.Flags().DurationVarP(&c.duration, "duration", "d", duration, what)
	cmd.Flags().BoolVar(&c.json, "json", false, "print one machine-readable JSON line instead of the report")
	cmd.Flags().StringVar(&c.progress, "progress", "auto", "live progress line on stderr: auto (when a terminal), always or never")
}

func (c *benchCommon) check() error {
	if c.duration <= 0 {
		return usagef("--duration %s: want a positive duration", c.duration)
	}
	switch c.progress {
	case "auto", "always", "never":
	default:
		return usagef("--progress %q: want auto, always or never", c.progress)
	}
	return nil
}

// benchLoad are the flags of the HTTP benchmarks.
type benchLoad struct {
	benchCommon
	connections  int
	messageBytes int
	batch        int
	topic        string
	partitions   int
}

func (l *benchLoad) register(cmd *cobra.Command, topic string, partitions int, duration time.Duration, what string) {
	l.benchCommon.register(cmd, duration, what)
	fl := cmd.Flags()
	fl.IntVarP(&l.connections, "connections", "c", 64, "concurrent connections, one request in flight on each")
	fl.IntVar(&l.messageBytes, "message-bytes", 1024, "size of each message value: a JSON string of exactly this many bytes")
	fl.IntVarP(&l.batch, "batch", "b", 1, "messages per produce request")
	fl.StringVarP(&l.topic, "topic", "t", topic, "topic (created when missing)")
	fl.IntVar(&l.partitions, "partitions", partitions, "partitions of the topic when it is created")
}

func (l *benchLoad) check() error {
	if err := l.benchCommon.check(); err != nil {
		return err
	}
	switch {
	case l.connections < 1:
		return usagef("--connections %d: want at least 1", l.connections)
	case l.messageBytes < 2:
		return usagef("--message-bytes %d: want at least 2 (a JSON string has two quotes)", l.messageBytes)
	case l.batch < 1:
		return usagef("--batch %d: want at least 1", l.batch)
	case l.partitions < 1:
		return usagef("--partitions %d: want at least 1", l.partitions)
	}
	return nil
}

// ensureTopic creates the topic when it does not exist and returns its description.
func ensureTopic(ctx context.Context, c *client.Client, topic string, partitions int) (*client.Topic, error) {
	t, err := c.DescribeTopic(ctx, topic)
	if err == nil {
		return t, nil
	}
	if !client.IsStatus(err, 404) {
		return nil, fmt.Errorf("describe topic %s: %w", topic, err)
	}
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: partitions}); err != nil {
		return nil, fmt.Errorf("create topic %s: %w", topic, err)
	}
	return c.DescribeTopic(ctx, topic)
}

// jsonStringValue returns a JSON string of exactly n bytes (n >= 2), quotes included.
func jsonStringValue(n int) []byte {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	b[0], b[n-1] = '"', '"'
	for i := 1; i < n-1; i++ {
		b[i] = alphabet[i%len(alphabet)]
	}
	return b
}

// meter counts progress with atomics shared by the connections; it is read once a second.
type meter struct {
	requests atomic.Int64
	messages atomic.Int64
	bytes    atomic.Int64
	errors   atomic.Int64

	mu          sync.Mutex
	errorSample string
}

func (m *meter) fail(format string, args ...any) {
	m.errors.Add(1)
	m.mu.Lock()
	if m.errorSample == "" {
		m.errorSample = fmt.Sprintf(format, args...)
	}
	m.mu.Unlock()
}

// progress prints a live line on w every second until stop is closed. It overwrites itself
// with \r, so it is only shown on a terminal unless forced.
func progress(w io.Writer, mode, label string, m *meter, stop <-chan struct{}) (done func()) {
	show := mode == "always" || (mode == "auto" && isTerminal(w))
	if !show {
		return func() {}
	}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		start := time.Now()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var lastMsgs, lastBytes int64
		last := start
		for {
			select {
			case <-stop:
				fmt.Fprint(w, "\r\033[K")
				return
			case now := <-tick.C:
				msgs, bytes := m.messages.Load(), m.bytes.Load()
				dt := now.Sub(last).Seconds()
				fmt.Fprintf(w, "\r\033[K%s %4.0fs  %10.0f msgs/s  %8.1f MB/s  errors %d",
					label, now.Sub(start).Seconds(), float64(msgs-lastMsgs)/dt, float64(bytes-lastBytes)/dt/1e6, m.errors.Load())
				lastMsgs, lastBytes, last = msgs, bytes, now
			}
		}
	}()
	return func() { <-finished }
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// benchResult is the outcome of one benchmark, printed as a report or one JSON line.
type benchResult struct {
	Bench        string  `json:"bench"`
	Server       string  `json:"server,omitempty"`
	Connections  int     `json:"connections,omitempty"`
	MessageBytes int     `json:"message_bytes,omitempty"`
	Batch        int     `json:"batch,omitempty"`
	Seconds      float64 `json:"seconds"`
	Requests     int64   `json:"requests"`
	Errors       int64   `json:"errors"`
	Messages     int64   `json:"messages"`
	Bytes        int64   `json:"bytes"`
	MsgsPerSec   float64 `json:"msgs_per_sec"`
	MBPerSec     float64 `json:"mb_per_sec"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	P999Ms       float64 `json:"p999_ms"`
	MaxMs        float64 `json:"max_ms"`
	ErrorSample  string  `json:"error_sample,omitempty"`
	Note         string  `json:"note,omitempty"`
}

func newResult(name string, m *meter, h *histogram, elapsed time.Duration) benchResult {
	secs := elapsed.Seconds()
	r := benchResult{
		Bench: name, Seconds: round3(secs),
		Requests: m.requests.Load(), Errors: m.errors.Load(), Messages: m.messages.Load(), Bytes: m.bytes.Load(),
		P50Ms: ms(h.quantile(0.50)), P99Ms: ms(h.quantile(0.99)), P999Ms: ms(h.quantile(0.999)), MaxMs: ms(h.max),
		ErrorSample: m.errorSample,
	}
	if secs > 0 {
		r.MsgsPerSec = round3(float64(r.Messages) / secs)
		r.MBPerSec = round3(float64(r.Bytes) / secs / 1e6)
	}
	return r
}

func ms(d time.Duration) float64 { return round3(float64(d) / 1e6) }

func round3(f float64) float64 { return float64(int64(f*1000+0.5)) / 1000 }

func (r benchResult) print(w io.Writer, asJSON bool, bytesWhat string) error {
	if asJSON {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "bench %s", r.Bench)
	if r.Connections > 0 {
		fmt.Fprintf(&sb, ": %d connections", r.Connections)
	}
	if r.Batch > 0 {
		fmt.Fprintf(&sb, ", %d msg/request", r.Batch)
	}
	if r.MessageBytes > 0 {
		fmt.Fprintf(&sb, ", %d B/msg", r.MessageBytes)
	}
	fmt.Fprintf(&sb, ", %.2f s\n", r.Seconds)
	fmt.Fprintf(&sb, "  requests   %d (%d errors)\n", r.Requests, r.Errors)
	if r.Messages > 0 {
		fmt.Fprintf(&sb, "  messages   %d  %.0f msgs/s\n", r.Messages, r.MsgsPerSec)
	}
	fmt.Fprintf(&sb, "  throughput %.1f MB/s (%s, MB = 10^6 bytes)\n", r.MBPerSec, bytesWhat)
	fmt.Fprintf(&sb, "  latency    p50 %.2f ms  p99 %.2f ms  p999 %.2f ms  max %.2f ms\n", r.P50Ms, r.P99Ms, r.P999Ms, r.MaxMs)
	if r.ErrorSample != "" {
		fmt.Fprintf(&sb, "  first error: %s\n", r.ErrorSample)
	}
	if r.Note != "" {
		fmt.Fprintf(&sb, "  note: %s\n", r.Note)
	}
	_, err := io.WriteString(w, sb.String())
	return err
}
