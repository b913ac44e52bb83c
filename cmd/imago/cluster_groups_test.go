package main

// Issue 13, test 4 (first half): a consumer group with two members on two nodes of the
// cluster, the leader (which runs the group coordinator) killed mid-stream. The members use
// the group API directly (join, poll, commit), so the test knows each acknowledged commit:
// no message below an acknowledged commit may be delivered again by a poll sent after that
// acknowledgement, and every stored message is delivered at least once.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/client"
)

type delivery struct {
	partition int
	offset    int64
	polled    time.Time // when the poll that delivered it was sent
	member    int
}

type commitAck struct {
	partition int
	next      int64
	acked     time.Time
	member    int
}

// groupLog is what the members saw.
type groupLog struct {
	mu         sync.Mutex
	deliveries []delivery
	commits    []commitAck
	delivered  map[[2]int64]bool
	rejoins    int
	pollErrs   []string // polls without an answer: when, which member, why
}

func TestClusterGroupsLeaderKill(t *testing.T) {
	seed := clusterSeedFor(t)
	c := newTestCluster(t, seed)
	c.startAll()
	c.waitConverged(60 * time.Second)
	// Node 1 leads, the members talk to nodes 2 and 3: their requests are forwarded to the
	// coordinator on the leader, which is then killed.
	c.transferLeader(0)
	r := c.newRun("e2e-groups", 4)
	r.startLoad(2, 0, seed)

	group := uniqueName(t, "e2e-group-")
	gl := &groupLog{delivered: map[[2]int64]bool{}}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, node := range []int{1, 2} {
		// Straight to the node, not through its client proxy: the members' requests are not
		// the fault under test here.
		cl := client.New("http://"+c.nodes[node].httpAddr, client.WithRetries(1), client.WithHTTPClient(r.hc))
		wg.Add(1)
		go func() { defer wg.Done(); groupMember(ctx, t, r, cl, group, node, gl) }()
	}
	loadFor(1500 * time.Millisecond)
	l := c.leaderIndex()
	c.nodes[l].kill()
	nl := c.waitNewLeader(l, 30*time.Second)
	t.Logf("leader node %d (the group coordinator) killed; node %d leads", l+1, nl+1)
	loadFor(1000 * time.Millisecond)
	c.start(l, false)
	loadFor(1000 * time.Millisecond)
	r.finish(seed) // stops the producers, checks the log; the members go on

	// Every stored message delivered at least once.
	want := map[[2]int64]bool{}
	for p := 0; p < r.parts; p++ {
		for off := range r.readAll(0, p, true) {
			want[[2]int64{int64(p), int64(off)}] = true
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		gl.mu.Lock()
		missing := 0
		for k := range want {
			if !gl.delivered[k] {
				missing++
			}
		}
		gl.mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d of %d stored messages were never delivered to the group", missing, len(want))
			gl.mu.Lock()
			shown := 0
			for k := range want {
				if gl.delivered[k] || shown == 3 {
					continue
				}
				shown++
				var near []string
				for _, cm := range gl.commits {
					if int64(cm.partition) == k[0] && cm.next >= k[1]-3 && cm.next <= k[1]+5 {
						near = append(near, fmt.Sprintf("member %d committed %d at %s", cm.member, cm.next, cm.acked.Format("15:04:05.000")))
					}
				}
				for _, d := range gl.deliveries {
					if int64(d.partition) == k[0] && d.offset >= k[1]-2 && d.offset <= k[1]+2 {
						near = append(near, fmt.Sprintf("member %d got %d from a poll at %s", d.member, d.offset, d.polled.Format("15:04:05.000")))
					}
				}
				t.Logf("never delivered: partition %d offset %d; nearby: %v", k[0], k[1], near)
				fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, a := r.fetchOnce(fctx, "http://"+c.nodes[1].httpAddr, int(k[0]), k[1], 5, false)
				cancel()
				if res != nil {
					t.Logf("the leader's fetch at partition %d offset %d: %d messages, next %d, end %d", k[0], k[1], len(res.Messages), res.NextOffset, res.EndOffset)
				} else {
					t.Logf("the leader's fetch at partition %d offset %d: %s", k[0], k[1], a)
				}
			}
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			st, err := client.New("http://"+c.nodes[1].httpAddr, client.WithHTTPClient(r.hc)).GroupOffsets(sctx, group)
			cancel()
			if err != nil {
				t.Logf("group status: %v", err)
			} else {
				for _, m := range st.Members {
					t.Logf("group member %s: assignments %v, cursors %v", m.MemberID, m.Assignments, m.Cursors)
				}
				t.Logf("group offsets: %+v", st.Offsets)
			}
			for _, e := range gl.pollErrs {
				t.Logf("poll without answer: %s", e)
			}
			gl.mu.Unlock()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	wg.Wait()

	// No message below an acknowledged commit delivered by a poll sent after it.
	gl.mu.Lock()
	defer gl.mu.Unlock()
	sort.Slice(gl.commits, func(i, j int) bool { return gl.commits[i].acked.Before(gl.commits[j].acked) })
	again := 0
	for _, d := range gl.deliveries {
		for _, cm := range gl.commits {
			if cm.acked.After(d.polled) {
				break
			}
			if cm.partition == d.partition && d.offset < cm.next {
				again++
				if again <= 5 {
					t.Errorf("partition %d offset %d delivered to member %d by a poll sent %v after member %d's commit of %d was acknowledged",
						d.partition, d.offset, d.member, d.polled.Sub(cm.acked).Round(time.Millisecond), cm.member, cm.next)
				}
				break
			}
		}
	}
	redelivered := len(gl.deliveries) - len(gl.delivered)
	t.Logf("group %s: %d deliveries of %d messages (%d again, as at-least-once allows for uncommitted ones), %d acknowledged commits, %d rejoins; %d committed messages delivered again",
		group, len(gl.deliveries), len(gl.delivered), redelivered, len(gl.commits), gl.rejoins, again)
}

// groupMember joins, polls and commits through one node until ctx ends, rejoining when the
// coordinator no longer knows it (after a failover) and retrying other failures.
//
// Each poll carries the member's positions (what it expects next in each partition it
// keeps), so the messages of a poll whose answer was lost come again at the next poll; a
// lost answer at the tail of a partition would otherwise stay undelivered until the next
// rebalance. A gap that remains, between what it got and what the next poll starts at (the
// partition moved away and back meanwhile, and its other owner committed), is read with
// plain fetches before the member commits past it.
func groupMember(ctx context.Context, t *testing.T, r *ceRun, cl *client.Client, group string, node int, gl *groupLog) {
	topic := r.topic
	var member string
	expected := map[int]int64{} // per partition this member keeps: the next offset it expects
	for ctx.Err() == nil {
		if member == "" {
			jctx, cancel := context.WithTimeout(ctx, ceAttemptTimeout)
			m, err := cl.JoinGroup(jctx, group, client.JoinGroupRequest{Topics: []string{topic}, Mode: client.Clustered, SessionTimeoutMS: 5000})
			cancel()
			if err != nil {
				sleepCtx(ctx, 50*time.Millisecond)
				continue
			}
			member = m.MemberID
			clear(expected)
			gl.mu.Lock()
			gl.rejoins++
			gl.mu.Unlock()
		}
		polled := time.Now()
		pctx, cancel := context.WithTimeout(ctx, ceAttemptTimeout)
		opts := client.PollOptions{MaxMessages: 50, Wait: 200 * time.Millisecond}
		for p, off := range expected {
			opts.Positions = append(opts.Positions, client.GroupOffset{Topic: topic, Partition: p, Offset: off})
		}
		gm, err := cl.PollGroup(pctx, group, member, opts)
		cancel()
		if err != nil {
			if isCode(err, api.CodeUnknownMember) {
				member = ""
			}
			gl.mu.Lock()
			gl.pollErrs = append(gl.pollErrs, fmt.Sprintf("%s member %d (%s): %v", polled.Format("15:04:05.000"), node+1, member, err))
			gl.mu.Unlock()
			sleepCtx(ctx, 20*time.Millisecond)
			continue
		}
		owned := map[int]bool{}
		for _, a := range gm.Assignments {
			owned[a.Partition] = true
		}
		for p := range expected {
			if !owned[p] {
				delete(expected, p)
			}
		}
		msgs := gm.Messages
		first := map[int]int64{}
		for _, m := range msgs {
			if f, ok := first[m.Partition]; !ok || m.Offset < f {
				first[m.Partition] = m.Offset
			}
		}
		gapLeft := map[int]bool{} // a gap not read yet: no commit past it
		for p, f := range first {
			if e, ok := expected[p]; ok && f > e {
				gap, ok := readRange(ctx, r, node, p, e, f)
				if !ok {
					gapLeft[p] = true
					continue
				}
				msgs = append(msgs, gap...)
			}
		}
		next := map[int]int64{}
		gl.mu.Lock()
		for _, m := range msgs {
			if m.Topic != topic {
				t.Errorf("member %d got a message of topic %s", node+1, m.Topic)
				continue
			}
			gl.deliveries = append(gl.deliveries, delivery{partition: m.Partition, offset: m.Offset, polled: polled, member: node + 1})
			gl.delivered[[2]int64{int64(m.Partition), m.Offset}] = true
			if m.Offset+1 > next[m.Partition] && !gapLeft[m.Partition] {
				next[m.Partition] = m.Offset + 1
			}
		}
		gl.mu.Unlock()
		for p, n := range next {
			expected[p] = n
		}
		if len(next) == 0 {
			continue
		}
		var offs []client.GroupOffset
		for p, n := range next {
			offs = append(offs, client.GroupOffset{Topic: topic, Partition: p, Offset: n})
		}
		cctx, cancel := context.WithTimeout(ctx, ceAttemptTimeout)
		err = cl.CommitGroup(cctx, group, member, offs)
		cancel()
		if err != nil {
			if isCode(err, api.CodeUnknownMember) {
				member = ""
			}
			continue // not acknowledged: those messages may come again
		}
		acked := time.Now()
		gl.mu.Lock()
		for _, o := range offs {
			gl.commits = append(gl.commits, commitAck{partition: o.Partition, next: o.Offset, acked: acked, member: node + 1})
		}
		gl.mu.Unlock()
	}
}

// readRange reads offsets [from, to) of partition p through node (from the leader).
func readRange(ctx context.Context, r *ceRun, node, p int, from, to int64) ([]api.Message, bool) {
	var out []api.Message
	for off := from; off < to; {
		fctx, cancel := context.WithTimeout(ctx, ceAttemptTimeout)
		res, _ := r.fetchOnce(fctx, "http://"+r.c.nodes[node].httpAddr, p, off, int(to-off), false)
		cancel()
		if res == nil || len(res.Messages) == 0 {
			return nil, false
		}
		for _, m := range res.Messages {
			if m.Offset < to {
				out = append(out, m)
			}
		}
		off = res.NextOffset
	}
	return out, true
}

func isCode(err error, code string) bool {
	var e *client.Error
	return errors.As(err, &e) && e.Code == code
}

// transferLeader moves leadership to node i (POST /v1/cluster/leader) and waits for it.
func (c *testCluster) transferLeader(i int) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.leaderIndex() != i {
		if time.Now().After(deadline) {
			c.t.Fatalf("leadership did not move to node %d", i+1)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		a := ceDo(ctx, c.http, http.MethodPost, "http://"+c.nodes[i].httpAddr+"/v1/cluster/leader", []byte(fmt.Sprintf(`{"id": %d}`, i+1)), nil)
		cancel()
		if a.status != http.StatusOK {
			c.t.Logf("transfer leadership to node %d: %s %s", i+1, a, a.body)
			time.Sleep(100 * time.Millisecond)
		}
	}
}
