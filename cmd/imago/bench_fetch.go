package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/imagomq/imago/internal/config"
	"github.com/spf13/cobra"
)

// byteSizeFlag lets a flag take "1GiB"-style sizes.
type byteSizeFlag struct{ v *config.ByteSize }

func (f byteSizeFlag) String() string     { return f.v.String() }
func (f byteSizeFlag) Set(s string) error { return f.v.UnmarshalText([]byte(s)) }
func (f byteSizeFlag) Type() string       { return "size" }

type benchFetchFlags struct {
	benchLoad
	fillBytes   config.ByteSize
	partition   int
	maxBytes    config.ByteSize
	maxMessages int
	fillOnly    bool
}

func newBenchFetchCmd(a *app) *cobra.Command {
	f := benchFetchFlags{fillBytes: 1 << 30, maxBytes: 1 << 20, maxMessages: 10000}
	cmd := &cobra.Command{
		Use:   "fetch",
		Short: "Measure fetch throughput of one partition from offset 0 to its end",
		Long: `Fill one partition to --fill-bytes (skipped when it already holds that much: run it twice and
the second run reads from page cache), then read it from its start to its end over
--connections connections, each reading a contiguous slice of offsets with requests of
--max-bytes. MB/s counts response body bytes (JSON with the message values).

To stay cheap the client does not decode the JSON: it finds "next_offset" in the body
with a byte search (the last occurrence, which is the top-level field, since the bench's
values are plain strings) and asks for that offset next.`,
		Example: `  imago bench fetch
  imago bench fetch --fill-bytes 1GiB --connections 8 --json
  imago bench fetch --fill-bytes 64MiB --topic quick-fetch`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := f.check(); err != nil {
				return err
			}
			if f.maxBytes < 1 || f.maxMessages < 1 || f.partition < 0 {
				return usagef("--max-bytes, --max-messages and --partition must be positive")
			}
			return runBenchFetch(cmd.Context(), a, f)
		},
	}
	f.register(cmd, "bench-fetch", 1, 2*time.Minute, "upper bound on the read phase")
	f.batch = 100
	cmd.Flags().Lookup("batch").DefValue = "100"
	cmd.Flags().Lookup("batch").Usage = "messages per produce request while filling"
	f.connections = 4
	cmd.Flags().Lookup("connections").DefValue = "4"
	fl := cmd.Flags()
	fl.Var(byteSizeFlag{&f.fillBytes}, "fill-bytes", "fill the partition to at least this many stored bytes first (e.g. 1GiB)")
	fl.IntVarP(&f.partition, "partition", "p", 0, "partition to fill and read")
	fl.Var(byteSizeFlag{&f.maxBytes}, "max-bytes", "max_bytes of each fetch request")
	fl.IntVar(&f.maxMessages, "max-messages", 10000, "max_messages of each fetch request")
	fl.BoolVar(&f.fillOnly, "fill-only", false, "only fill the partition (e.g. to put a large log on disk), do not read it")
	return cmd
}

func runBenchFetch(ctx context.Context, a *app, f benchFetchFlags) error {
	target, err := parseTarget(a.server, a.token)
	if err != nil {
		return err
	}
	c := a.client()
	t, err := ensureTopic(ctx, c, f.topic, f.partitions)
	if err != nil {
		return err
	}
	if f.partition >= len(t.Partitions) {
		return fmt.Errorf("topic %s has %d partitions; there is no partition %d", f.topic, len(t.Partitions), f.partition)
	}
	if have := t.Partitions[f.partition].Bytes; have < int64(f.fillBytes) {
		if err := fillPartition(ctx, a, target, f, int64(f.fillBytes)-have); err != nil {
			return err
		}
		if t, err = c.DescribeTopic(ctx, f.topic); err != nil {
			return err
		}
	}
	p := t.Partitions[f.partition]
	if f.fillOnly {
		fmt.Fprintf(a.stdout, "partition %s/%d holds %d bytes, offsets %d..%d\n", f.topic, f.partition, p.Bytes, p.StartOffset, p.EndOffset)
		return nil
	}
	span := p.EndOffset - p.StartOffset
	if span <= 0 {
		return fmt.Errorf("partition %s/%d is empty", f.topic, f.partition)
	}
	n := int64(f.connections)
	if n > span {
		n = span
	}
	cursor := make([]int64, n)
	limit := make([]int64, n)
	for i := int64(0); i < n; i++ {
		cursor[i] = p.StartOffset + span*i/n
		limit[i] = p.StartOffset + span*(i+1)/n
	}
	prefix := "/v1/topics/" + url.PathEscape(f.topic) + "/partitions/" + strconv.Itoa(f.partition) + "/messages?offset="
	suffix := "&max_bytes=" + strconv.FormatInt(int64(f.maxBytes), 10) + "&max_messages="
	bufs := make([][]byte, n)

	var m meter
	stopProgress := make(chan struct{})
	waitProgress := progress(a.stderr, f.progress, "fetch", &m, stopProgress)
	elapsed, h := runConns(ctx, int(n), target.dialAddr, f.duration, func(i int, rc *rawConn, h *histogram) bool {
		off := cursor[i]
		if off >= limit[i] {
			return true
		}
		want := limit[i] - off
		if want > int64(f.maxMessages) {
			want = int64(f.maxMessages)
		}
		path := prefix + strconv.FormatInt(off, 10) + suffix + strconv.FormatInt(want, 10)
		bufs[i] = target.appendRequest(bufs[i][:0], "GET", path, nil)
		t0 := time.Now()
		resp, err := rc.roundTrip(bufs[i], true)
		if err != nil {
			m.fail("%v", err)
			time.Sleep(10 * time.Millisecond)
			return false
		}
		if resp.status != 200 {
			m.fail("HTTP %d at offset %d: %.300s", resp.status, off, resp.body)
			if resp.status == 416 || resp.status == 404 || resp.status == 400 {
				return true
			}
			backOff(resp)
			return false
		}
		next, ok := findNextOffset(resp.body)
		if !ok {
			m.fail("no next_offset in a 200 response at offset %d", off)
			return true
		}
		if next <= off {
			return true // nothing more to read here
		}
		h.record(time.Since(t0))
		m.requests.Add(1)
		m.messages.Add(next - off)
		m.bytes.Add(resp.bodyLen)
		cursor[i] = next
		return false
	})
	close(stopProgress)
	waitProgress()
	r := newResult("fetch", &m, h, elapsed)
	r.Server, r.Connections = a.server, int(n)
	r.Note = fmt.Sprintf("read offsets %d..%d of %s/%d (%d bytes stored)", p.StartOffset, p.EndOffset, f.topic, f.partition, p.Bytes)
	for i := range cursor {
		if cursor[i] < limit[i] {
			r.Note += "; stopped before the end (--duration or an error)"
			break
		}
	}
	return r.print(a.stdout, f.json, "response bodies")
}

// findNextOffset finds the value of the last "next_offset" key in a fetch response body
// without decoding the JSON. The last occurrence is the top-level field as long as no message
// value is an object with a key of that name, which holds for the benchmark's string values.
func findNextOffset(body []byte) (int64, bool) {
	i := bytes.LastIndex(body, []byte(`"next_offset"`))
	if i < 0 {
		return 0, false
	}
	rest := bytes.TrimLeft(body[i+len(`"next_offset"`):], " \t\r\n")
	if len(rest) == 0 || rest[0] != ':' {
		return 0, false
	}
	rest = bytes.TrimLeft(rest[1:], " \t\r\n")
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	n, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	return n, err == nil
}

// fillPartition produces about need bytes of values into the partition, in requests of
// f.batch messages over f.connections connections.
func fillPartition(ctx context.Context, a *app, target httpTarget, f benchFetchFlags, need int64) error {
	req := target.request("POST", "/v1/topics/"+url.PathEscape(f.topic)+"/messages", produceBody(f.batch, f.messageBytes, f.partition))
	fmt.Fprintf(a.stderr, "bench fetch: filling %s/%d with %d more bytes (%d B messages, %d per request)\n",
		f.topic, f.partition, need, f.messageBytes, f.batch)
	var m meter
	stopProgress := make(chan struct{})
	waitProgress := progress(a.stderr, f.progress, "fill", &m, stopProgress)
	elapsed, _ := runConns(ctx, f.connections, target.dialAddr, 24*time.Hour, func(_ int, rc *rawConn, h *histogram) bool {
		if m.bytes.Load() >= need {
			return true
		}
		produceOnce(rc, req, f.batch, f.messageBytes, &m, h)
		return m.errors.Load() > 100 // give up on a server that keeps refusing
	})
	close(stopProgress)
	waitProgress()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fill interrupted: %w", err)
	}
	if m.bytes.Load() < need {
		return fmt.Errorf("fill failed after %d errors; first: %s", m.errors.Load(), m.errorSample)
	}
	fmt.Fprintf(a.stderr, "bench fetch: filled %d bytes in %.1f s (%.1f MB/s)\n",
		m.bytes.Load(), elapsed.Seconds(), float64(m.bytes.Load())/elapsed.Seconds()/1e6)
	return nil
}
