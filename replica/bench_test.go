package replica

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
)

// produceLoad runs b.N produces of one 1 KiB message from 64 goroutines through produce.
func produceLoad(b *testing.B, produce func([]broker.Message) error) {
	msg := make([]byte, 1024)
	var wg sync.WaitGroup
	work := make(chan struct{}, b.N)
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	b.SetBytes(1024)
	b.ResetTimer()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				if err := produce([]broker.Message{{Value: msg}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// BenchmarkProduceSingle is the baseline: one broker, no cluster, fsync always.
func BenchmarkProduceSingle(b *testing.B) {
	opts := broker.NewOptions(b.TempDir())
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	br, err := broker.Open(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer br.Close()
	if _, err := br.CreateTopic("bench", broker.TopicConfig{Partitions: 12}); err != nil {
		b.Fatal(err)
	}
	produceLoad(b, func(m []broker.Message) error {
		_, err := br.Produce(context.Background(), "bench", m, "")
		return err
	})
}

// BenchmarkProduceCluster produces through the leader of three in-process members (each with
// its own data directory and fsync, talking over loopback TCP).
func BenchmarkProduceCluster(b *testing.B) {
	t := &testing.T{}
	c := &testCluster{t: t}
	root := b.TempDir()
	for i := 1; i <= 3; i++ {
		c.peers = append(c.peers, Peer{ID: uint64(i), RaftAddr: testenv.FreeAddr(b)})
		c.dirs = append(c.dirs, root+"/node"+string(rune('0'+i)))
	}
	c.bs = make([]*broker.Broker, 3)
	c.ms = make([]*Member, 3)
	for i := range 3 {
		if err := c.tryStart(i, true); err != nil {
			b.Fatal(err)
		}
	}
	defer func() {
		for i := range 3 {
			c.stop(i)
		}
	}()
	l := -1
	for l < 0 {
		time.Sleep(10 * time.Millisecond)
		for i, m := range c.ms {
			if m.Serving() {
				l = i
			}
		}
	}
	br := c.bs[l]
	if _, err := br.CreateTopic("bench", broker.TopicConfig{Partitions: 12}); err != nil {
		b.Fatal(err)
	}
	before := [3]int64{}
	for i := range 3 {
		before[i] = c.bs[i].Stats().Fsyncs
	}
	produceLoad(b, func(m []broker.Message) error {
		_, err := br.Produce(context.Background(), "bench", m, "")
		return err
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/float64(c.bs[l].Stats().Fsyncs-before[l]), "msgs/leader-fsync")
	f := (l + 1) % 3
	b.ReportMetric(float64(b.N)/float64(c.bs[f].Stats().Fsyncs-before[f]), "msgs/follower-fsync")
}
