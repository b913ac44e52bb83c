package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
)

func newBenchPutCmd(a *app) *cobra.Command {
	var l benchLoad
	var addr string
	var inflight int
	cmd := &cobra.Command{
		Use:   "put",
		Short: "Measure durable put over the text protocol: msgs/s, MB/s and latency",
		Long: `Put messages over the MetaQ-style text protocol (--protocol, default 127.0.0.1:8123) on
--connections connections for --duration, keeping --inflight puts outstanding on each
(pipelined: requests are written before earlier answers arrive). Each put carries a value of
--message-bytes raw bytes to --topic (created over HTTP at --server with --partitions when
missing) and lets the broker choose the partition. A put counts when it is answered
"result 200", which the server sends once the message is durable under its fsync policy.
Latency is from writing a put to reading its answer.`,
		Example: `  imago bench put
  imago bench put --connections 64 --inflight 1 --message-bytes 1024 --duration 10s
  imago bench put --inflight 16 --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := l.check(); err != nil {
				return err
			}
			if inflight < 1 {
				return usagef("--inflight %d: want at least 1", inflight)
			}
			return runBenchPut(cmd.Context(), a, l, addr, inflight)
		},
	}
	l.register(cmd, "bench", 4, 10*time.Second, "how long to put")
	cmd.Flags().StringVar(&addr, "protocol", "127.0.0.1:8123", "address of the text protocol door")
	cmd.Flags().IntVar(&inflight, "inflight", 1, "puts outstanding per connection (pipelining)")
	return cmd
}

func runBenchPut(ctx context.Context, a *app, l benchLoad, addr string, inflight int) error {
	if _, err := ensureTopic(ctx, a.client(), l.topic, l.partitions); err != nil {
		return err
	}
	payload := bytes.Repeat([]byte("x"), l.messageBytes)
	line := []byte(fmt.Sprintf("put %s -1 %d 0 ", l.topic, l.messageBytes))

	var m meter
	stopProgress := make(chan struct{})
	waitProgress := progress(a.stderr, l.progress, "put", &m, stopProgress)
	var stop atomic.Bool
	timer := time.AfterFunc(l.duration, func() { stop.Store(true) })
	defer timer.Stop()
	ctxDone := context.AfterFunc(ctx, func() { stop.Store(true) })
	defer ctxDone()

	hists := make([]*histogram, l.connections)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range hists {
		hists[i] = new(histogram)
		wg.Add(1)
		go func(h *histogram) {
			defer wg.Done()
			putConn(addr, line, payload, inflight, &stop, &m, h)
		}(hists[i])
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stopProgress)
	waitProgress()
	total := new(histogram)
	for _, h := range hists {
		total.merge(h)
	}
	r := newResult("put", &m, total, elapsed)
	r.Server, r.Connections, r.MessageBytes, r.Batch = "textproto://"+addr, l.connections, l.messageBytes, 1
	r.Note = fmt.Sprintf("%d put(s) in flight per connection; answered after fsync", inflight)
	return r.print(a.stdout, l.json, "message values")
}

// putConn runs one pipelined connection until stop: a writer keeps inflight puts outstanding,
// a reader matches answers (which come back in request order) to their send times.
func putConn(addr string, line, payload []byte, inflight int, stop *atomic.Bool, m *meter, h *histogram) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		m.fail("dial %s: %v", addr, err)
		time.Sleep(100 * time.Millisecond)
		return
	}
	defer c.Close()
	bw := bufio.NewWriterSize(c, 64<<10)
	br := bufio.NewReaderSize(c, 64<<10)
	slots := make(chan struct{}, inflight) // one per outstanding put
	sent := make(chan time.Time, inflight) // send times of outstanding puts, in order
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for t0 := range sent {
			head, err := br.ReadSlice('\n')
			if err != nil {
				if !stop.Load() {
					m.fail("read answer: %v", err)
				}
				return
			}
			f := bytes.Fields(head)
			if len(f) < 4 || string(f[0]) != "result" {
				m.fail("unexpected answer %q", head)
				return
			}
			n, _ := strconv.Atoi(string(f[2]))
			if _, err := br.Discard(n + 2); err != nil {
				m.fail("read answer body: %v", err)
				return
			}
			<-slots
			if string(f[1]) != "200" {
				m.fail("put answered %s", f[1])
				continue
			}
			h.record(time.Since(t0))
			m.requests.Add(1)
			m.messages.Add(1)
			m.bytes.Add(int64(len(payload)))
		}
	}()
	opaque := 0
	for !stop.Load() {
		select {
		case slots <- struct{}{}:
		default:
			// Every slot is taken: send what is buffered, then wait for an answer.
			if err := bw.Flush(); err != nil {
				m.fail("write: %v", err)
				close(sent)
				return
			}
			select {
			case slots <- struct{}{}:
			case <-readerDone:
				close(sent)
				return
			}
		}
		opaque++
		t0 := time.Now()
		sent <- t0 // never blocks: slots bound the outstanding puts
		bw.Write(line)
		bw.WriteString(strconv.Itoa(opaque))
		bw.WriteString("\r\n")
		bw.Write(payload)
	}
	bw.Flush()
	close(sent)
	select {
	case <-readerDone:
	case <-time.After(10 * time.Second):
	}
}
