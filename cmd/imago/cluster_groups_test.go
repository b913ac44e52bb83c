package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestClusterGroupsLeaderKill: two members of a clustered consumer group, each talking to a
// different node, consume a topic while the leader (where groups run) is killed mid-stream.
// They rejoin on the new leader; afterwards every message was delivered (none missed) and no
// message below an offset the group had committed was delivered again.
func TestClusterGroupsLeaderKill(t *testing.T) {
	const parts, total = 4, 400
	c := newTestCluster(t, clusterSeedFor(t))
	c.startAll()
	l := c.waitLeader(20 * time.Second)
	url := func(i int) string { return "http://" + c.client[i].Addr() }
	ctx := context.Background()
	lc := client.New(url(l))
	if _, err := lc.CreateTopic(ctx, "grp", client.TopicConfig{Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	produce := func(node, from, to int) {
		pc := client.New(url(node))
		for i := from; i < to; i++ {
			p := i % parts
			v := json.RawMessage(fmt.Sprintf("%d", i))
			if _, err := pc.Produce(ctx, "grp", []client.Message{{Value: v, Partition: &p}}, client.ProduceOptions{IdempotencyKey: fmt.Sprint("grp-", i)}); err != nil {
				t.Fatalf("produce %d: %v", i, err)
			}
		}
	}
	produce(l, 0, total/2)

	var (
		mu        sync.Mutex
		delivered = map[[2]int64]int{} // (partition, offset) → deliveries
		committed = map[int]int64{}    // partition → highest committed next offset
		redeliver []string             // findings
		stop      = make(chan struct{})
		wg        sync.WaitGroup
	)
	consumer := func(node int) {
		defer wg.Done()
		cl := client.New(url(node))
		var member string
		for {
			select {
			case <-stop:
				return
			default:
			}
			if member == "" {
				m, err := cl.JoinGroup(ctx, "g", client.JoinGroupRequest{Topics: []string{"grp"}, SessionTimeoutMS: 3000})
				if err != nil {
					time.Sleep(100 * time.Millisecond) // no leader yet: back off as Retry-After asks
					continue
				}
				member = m.MemberID
			}
			res, err := cl.PollGroup(ctx, "g", member, client.PollOptions{MaxMessages: 10, Wait: 200 * time.Millisecond})
			if err != nil {
				member = "" // unknown_member after a failover, or no leader: join again
				continue
			}
			next := map[int]int64{}
			mu.Lock()
			for _, m := range res.Messages {
				k := [2]int64{int64(m.Partition), m.Offset}
				delivered[k]++
				if m.Offset < committed[m.Partition] {
					redeliver = append(redeliver, fmt.Sprintf("partition %d offset %d delivered after offset %d was committed", m.Partition, m.Offset, committed[m.Partition]))
				}
				next[m.Partition] = m.Offset + 1
			}
			mu.Unlock()
			if len(next) == 0 {
				continue
			}
			var offs []client.GroupOffset
			for p, o := range next {
				offs = append(offs, client.GroupOffset{Topic: "grp", Partition: p, Offset: o})
			}
			if err := cl.CommitGroup(ctx, "g", member, offs); err != nil {
				member = ""
				continue
			}
			mu.Lock()
			for p, o := range next {
				committed[p] = max(committed[p], o)
			}
			mu.Unlock()
		}
	}
	a, b := (l+1)%3, (l+2)%3
	wg.Add(2)
	go consumer(a)
	go consumer(b)
	waitUntil(t, 30*time.Second, "the first half consumed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered) >= total/4
	})
	c.nodes[l].kill()
	c.gone[l] = true
	nl := c.waitNewLeader(l, 20*time.Second)
	produce(nl, total/2, total)
	waitUntil(t, 60*time.Second, "every message consumed and committed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		var sum int64
		for p := range parts {
			sum += committed[p]
		}
		return len(delivered) == total && sum == total
	})
	close(stop)
	wg.Wait()
	for _, r := range redeliver {
		t.Error(r)
	}
	twice := 0
	for _, n := range delivered {
		if n > 1 {
			twice++
		}
	}
	t.Logf("%d messages delivered, %d more than once (polled, not yet committed, when the leader died)", len(delivered), twice)
}
