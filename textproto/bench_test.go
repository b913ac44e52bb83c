package textproto

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPutPipelined measures durable puts (fsync: always, acknowledged after the fsync)
// of 1 KiB values over the text protocol from 64 connections, each keeping depth puts in
// flight. depth=1 has 64 puts in flight in all, the in-flight count of the NATS JetStream
// baseline (scripts/nats-bench.sh).
func BenchmarkPutPipelined(b *testing.B) {
	for _, depth := range []int{1, 16} {
		b.Run(fmt.Sprintf("conns=64/depth=%d", depth), func(b *testing.B) {
			benchPuts(b, 64, depth, 1024)
		})
	}
}

func benchPuts(b *testing.B, conns, depth, size int) {
	ts := startServer(b, Options{})
	ts.createTopic("bench", 8)
	req := []byte(putLine("bench", -1, strings.Repeat("x", size), 0, 1))
	var next atomic.Int64
	var failed atomic.Int64
	clients := make([]net.Conn, conns)
	for i := range clients {
		clients[i] = ts.dial().nc
	}
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for _, nc := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			window := make(chan struct{}, depth)
			done := make(chan struct{})
			go func() { // reader: one answer frees one window slot
				defer close(done)
				br := bufio.NewReader(nc)
				for range window {
					line, err := br.ReadString('\n')
					if err != nil {
						failed.Add(1)
						return
					}
					var code, n int
					var op int64
					fmt.Sscanf(line, "result %d %d %d", &code, &n, &op)
					if code != 200 {
						failed.Add(1)
					}
					io.CopyN(io.Discard, br, int64(n+2))
				}
			}()
			bw := bufio.NewWriter(nc)
			for next.Add(1) <= int64(b.N) {
				select {
				case window <- struct{}{}:
				default:
					bw.Flush() // the window is full: send what is buffered, then wait
					window <- struct{}{}
				}
				bw.Write(req)
				if len(window) < cap(window) {
					continue
				}
				bw.Flush()
			}
			bw.Flush()
			close(window)
			<-done
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	if failed.Load() > 0 {
		b.Fatalf("%d puts failed", failed.Load())
	}
}

// BenchmarkGet measures get throughput from the page cache: 1 KiB messages, 1 MiB per get.
// MB/s counts the bytes of the value payload.
func BenchmarkGet(b *testing.B) {
	ts := startServer(b, Options{})
	ts.createTopic("bench", 1)
	const msgs, size = 20000, 1024
	c := ts.dial()
	var sb strings.Builder
	for i := 0; i < 1000; i++ {
		sb.WriteString(putLine("bench", 0, strings.Repeat("v", size), 0, int64(i)))
	}
	batch := sb.String()
	for k := 0; k < msgs/1000; k++ {
		go c.write(batch)
		for i := 0; i < 1000; i++ {
			c.readAnswer()
		}
	}
	var bytes int64
	b.ResetTimer()
	start := time.Now()
	off := 0
	for i := 0; i < b.N; i++ {
		a := c.call(fmt.Sprintf("get bench g 0 %d 1048576 %d\r\n", off, i))
		if a.kind != "value" || len(a.body) == 0 {
			b.Fatalf("get: %v", a)
		}
		bytes += int64(len(a.body))
		off += len(a.body) / (size + frameHeaderSize)
		if off >= msgs {
			off = 0
		}
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(bytes)/el.Seconds()/1e6, "MB/s")
}
