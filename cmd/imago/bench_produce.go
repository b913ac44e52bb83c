package main

import (
	"bytes"
	"context"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
)

func newBenchProduceCmd(a *app) *cobra.Command {
	var l benchLoad
	cmd := &cobra.Command{
		Use:   "produce",
		Short: "Measure durable produce: msgs/s, MB/s and latency",
		Long: `Produce to --topic (created with --partitions when missing) over --connections connections
for --duration, each connection sending one request at a time with --batch messages whose
values are JSON strings of --message-bytes bytes, without a partition (the server spreads
them round-robin). A request counts when it is answered 200, that is when its messages are
durable under the server's fsync policy. MB/s counts message value bytes.`,
		Example: `  imago bench produce
  imago bench produce --connections 64 --message-bytes 1024 --batch 1 --duration 10s
  imago bench produce --batch 100 --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := l.check(); err != nil {
				return err
			}
			return runBenchProduce(cmd.Context(), a, l)
		},
	}
	l.register(cmd, "bench", 4, 10*time.Second, "how long to produce")
	return cmd
}

// produceBody returns {"messages":[{"value":"…"},…]} with n values of size bytes, and, when
// partition >= 0, that partition on each message.
func produceBody(n, size, partition int) []byte {
	v := jsonStringValue(size)
	var b bytes.Buffer
	b.WriteString(`{"messages":[`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"value":`)
		b.Write(v)
		if partition >= 0 {
			b.WriteString(`,"partition":`)
			b.WriteString(strconv.Itoa(partition))
		}
		b.WriteByte('}')
	}
	b.WriteString(`]}`)
	return b.Bytes()
}

func runBenchProduce(ctx context.Context, a *app, l benchLoad) error {
	target, err := parseTarget(a.server, a.token)
	if err != nil {
		return err
	}
	if _, err := ensureTopic(ctx, a.client(), l.topic, l.partitions); err != nil {
		return err
	}
	req := target.request("POST", "/v1/topics/"+url.PathEscape(l.topic)+"/messages", produceBody(l.batch, l.messageBytes, -1))
	var m meter
	stopProgress := make(chan struct{})
	waitProgress := progress(a.stderr, l.progress, "produce", &m, stopProgress)
	elapsed, h := runConns(ctx, l.connections, target.dialAddr, l.duration, func(_ int, rc *rawConn, h *histogram) bool {
		produceOnce(rc, req, l.batch, l.messageBytes, &m, h)
		return false
	})
	close(stopProgress)
	waitProgress()
	r := newResult("produce", &m, h, elapsed)
	r.Server, r.Connections, r.MessageBytes, r.Batch = a.server, l.connections, l.messageBytes, l.batch
	return r.print(a.stdout, l.json, "message values")
}

// produceOnce sends one pre-built produce request and accounts for it; it reports success.
func produceOnce(rc *rawConn, req []byte, batch, size int, m *meter, h *histogram) bool {
	t0 := time.Now()
	resp, err := rc.roundTrip(req, true)
	if err != nil {
		m.fail("%v", err)
		time.Sleep(10 * time.Millisecond) // the server may be gone: do not spin
		return false
	}
	if resp.status != 200 {
		m.fail("HTTP %d: %.300s", resp.status, resp.body)
		backOff(resp)
		return false
	}
	h.record(time.Since(t0))
	m.requests.Add(1)
	m.messages.Add(int64(batch))
	m.bytes.Add(int64(batch * size))
	return true
}

// backOff sleeps after a refusal: Retry-After when given, else a little.
func backOff(resp response) {
	switch {
	case resp.retryAfter > 0:
		time.Sleep(resp.retryAfter)
	case resp.status == 429 || resp.status == 503:
		time.Sleep(10 * time.Millisecond)
	default:
		time.Sleep(time.Millisecond)
	}
}

// runConns runs fn in a loop on n connections (one goroutine each) until duration passes, ctx
// ends or fn returns true (done) for that connection. It returns the elapsed time and the merged
// latency histogram.
func runConns(ctx context.Context, n int, addr string, duration time.Duration, fn func(i int, rc *rawConn, h *histogram) bool) (time.Duration, *histogram) {
	var stop atomic.Bool
	timer := time.AfterFunc(duration, func() { stop.Store(true) })
	defer timer.Stop()
	ctxDone := context.AfterFunc(ctx, func() { stop.Store(true) })
	defer ctxDone()

	hists := make([]*histogram, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		hists[i] = new(histogram)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			rc := newRawConn(addr)
			defer rc.close()
			for !stop.Load() {
				if fn(i, rc, hists[i]) {
					return
				}
			}
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	total := new(histogram)
	for _, h := range hists {
		total.merge(h)
	}
	return elapsed, total
}
