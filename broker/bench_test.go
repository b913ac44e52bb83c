package broker

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

// BenchmarkProduce measures durable produce (fsync: always) through the group commit with
// 64 concurrent producers, 1 KiB messages, one message per request.
func BenchmarkProduce(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			br := mustOpen(b, testOptions(b, b.TempDir()))
			defer br.Close()
			mustCreate(b, br, "t", 4)
			value := bytes.Repeat([]byte("x"), 1024)
			msgs := make([]Message, batch)
			for i := range msgs {
				msgs[i] = Message{Value: value, Partition: -1}
			}
			var n atomic.Int64
			b.SetBytes(int64(1024 * batch))
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := 0; w < 64; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n.Add(1) <= int64(b.N) {
						if _, err := br.Produce(context.Background(), "t", msgs, ""); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

func BenchmarkFetch(b *testing.B) {
	br := mustOpen(b, testOptions(b, b.TempDir()))
	defer br.Close()
	mustCreate(b, br, "t", 1)
	value := bytes.Repeat([]byte("x"), 1024)
	msgs := make([]Message, 1000)
	for i := range msgs {
		msgs[i] = Message{Value: value, Partition: 0}
	}
	for i := 0; i < 10; i++ {
		br.Produce(context.Background(), "t", msgs, "")
	}
	b.SetBytes(1 << 20)
	b.ResetTimer()
	off := int64(0)
	for i := 0; i < b.N; i++ {
		res, err := br.Fetch(context.Background(), "t", 0, FetchOptions{Offset: off, MaxMessages: 10000, MaxBytes: 1 << 20})
		if err != nil {
			b.Fatal(err)
		}
		off = res.NextOffset
		if off >= 10000 {
			off = 0
		}
	}
}
