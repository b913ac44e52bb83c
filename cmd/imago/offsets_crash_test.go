package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/testenv"
)

// TestCrashOffsetCommits kills a real server while committers commit offsets (through the text
// door's offset command, answered after the offset store's group-commit flush), with the file
// store and with the PostgreSQL store. After each restart every acknowledged offset is stored
// (the stored one is at least the last acknowledged, never more than the last sent), and
// commits go on.
func TestCrashOffsetCommits(t *testing.T) {
	stores := []struct {
		name string
		env  func(t *testing.T) []string
	}{
		{"file", func(*testing.T) []string { return nil }},
		{"postgres", func(t *testing.T) []string {
			return []string{"IMAGO_OFFSETS_STORE=postgres", "IMAGO_OFFSETS_DSN=" + testenv.PostgresDSN(t)}
		}},
	}
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			env := st.env(t)
			rounds := 3
			if *crashLong {
				rounds = 20
			}
			seed := time.Now().UnixNano()
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewSource(seed))
			dir := t.TempDir()
			srv := startServerEnv(t, dir, env)
			ctx := context.Background()
			const parts, committers, perPart = 4, 8, 100000
			topic := fmt.Sprintf("offcrash-%d", seed%1000000)
			if _, err := srv.client().CreateTopic(ctx, topic, client.TopicConfig{Partitions: parts}); err != nil {
				t.Fatal(err)
			}
			// Fill every partition so that commits up to perPart are inside it.
			batch := make([]client.Message, 1000)
			for p := 0; p < parts; p++ {
				for i := range batch {
					batch[i] = client.Message{Value: json.RawMessage(`0`), Partition: client.Ptr(p)}
				}
				for n := 0; n < perPart; n += len(batch) {
					if _, err := srv.client().Produce(ctx, topic, batch, client.ProduceOptions{}); err != nil {
						t.Fatal(err)
					}
				}
			}
			group := func(i int) string { return fmt.Sprintf("oc%d-g%d", seed%1000000, i) }
			acked := make([]atomic.Int64, committers) // last acknowledged offset per committer
			sent := make([]atomic.Int64, committers)  // last offset sent per committer
			for round := 0; round < rounds; round++ {
				var ackCount atomic.Int64
				killAt := int64(200 + rng.Intn(2000))
				reached := make(chan struct{}) // closed by the commit that makes killAt
				onAck := func() {
					if ackCount.Add(1) == killAt {
						close(reached)
					}
				}
				var wg sync.WaitGroup
				for i := 0; i < committers; i++ {
					wg.Add(1)
					go func(i int) {
						defer wg.Done()
						commitLoop(srv.Protocol, topic, group(i), i%parts, &acked[i], &sent[i], onAck)
					}(i)
				}
				select {
				case <-reached:
				case <-time.After(60 * time.Second):
					t.Fatalf("round %d: only %d commits acknowledged in 60s", round, ackCount.Load())
				}
				srv.kill()
				wg.Wait()
				srv = startServerEnv(t, dir, env)
				for i := 0; i < committers; i++ {
					offs, err := srv.client().GroupOffsets(ctx, group(i))
					if err != nil {
						t.Fatalf("round %d: offsets of %s: %v", round, group(i), err)
					}
					var stored int64 = -1
					for _, o := range offs.Offsets {
						if o.Topic == topic && o.Partition == i%parts {
							stored = o.Offset
						}
					}
					a, s := acked[i].Load(), sent[i].Load()
					if stored < a {
						t.Fatalf("round %d: %s: stored offset %d, but %d was acknowledged: an acknowledged commit was lost", round, group(i), stored, a)
					}
					if stored > s {
						t.Fatalf("round %d: %s: stored offset %d, but only %d was ever sent", round, group(i), stored, s)
					}
				}
				t.Logf("round %d: killed after %d acknowledged commits; all present", round, ackCount.Load())
			}
		})
	}
}

// commitLoop commits increasing offsets for one (group, partition) until the connection
// breaks, recording what was sent and what was acknowledged.
func commitLoop(addr, topic, group string, partition int, acked, sent *atomic.Int64, onAck func()) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return
	}
	defer c.Close()
	rd := bufio.NewReader(c)
	for next := sent.Load() + 1; next <= 100000; next++ {
		sent.Store(next)
		if _, err := fmt.Fprintf(c, "offset %s %s %d %d %d\r\n", topic, group, partition, next, next); err != nil {
			return
		}
		head, err := rd.ReadString('\n')
		if err != nil {
			return
		}
		f := strings.Fields(head)
		var n int
		if len(f) < 4 {
			return
		}
		fmt.Sscan(f[2], &n)
		if _, err := io.CopyN(io.Discard, rd, int64(n)+2); err != nil {
			return
		}
		if f[1] != "200" {
			return
		}
		acked.Store(next)
		onAck()
	}
}
