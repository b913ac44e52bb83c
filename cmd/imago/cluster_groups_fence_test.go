package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/client"
)

// A leader that was deposed without knowing it yet (cut off from the other members and paused
// while they elect another, then resumed: it still counts itself leader until its quorum
// check fails, about an election timeout later) keeps the consumer groups of its term in
// memory. Meanwhile the new leader deals their partitions to other members, which read the
// committed offsets from the shared store. The old leader must then neither acknowledge a
// commit of its members (the new owner did not see it and delivers the committed messages
// again) nor deliver, from its own cursors, messages the new owner has committed since. In
// both cases no poll sent after an acknowledged commit may deliver a message below it.

// deposedGroup is the scene both tests share: member A joined through the old leader, got
// every message and committed the first ones; the old leader is cut off and paused; member B
// joined through the new leader, took the partition and polled from A's commit.
type deposedGroup struct {
	c            *testCluster
	ctx          context.Context
	topic, group string
	old, nl      int
	a, b         *client.Client
	memberA      string
	memberB      string
	firstCommit  int64
	total        int64
	resumed      bool
}

func newDeposedGroup(t *testing.T) *deposedGroup {
	seed := clusterSeedFor(t)
	c := newTestCluster(t, seed)
	c.startAll()
	c.waitConverged(60 * time.Second)
	r := c.newRun(uniqueName(t, "e2e-fence-"), 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	d := &deposedGroup{c: c, ctx: ctx, topic: r.topic, group: uniqueName(t, "e2e-fence-group-"), old: c.leaderIndex(), firstCommit: 5, total: 20}
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}}
	// Straight to the nodes (no client proxy), one attempt per call: a retry would hide
	// which node answered.
	clientOf := func(i int) *client.Client {
		return client.New("http://"+c.nodes[i].httpAddr, client.WithRetries(1), client.WithHTTPClient(hc))
	}
	msgs := make([]client.Message, d.total)
	for i := range msgs {
		msgs[i] = client.Message{Value: json.RawMessage(strconv.Itoa(i))}
	}
	d.a = clientOf(d.old)
	if _, err := d.a.Produce(ctx, d.topic, msgs, client.ProduceOptions{}); err != nil {
		t.Fatalf("produce: %v", err)
	}
	d.memberA = d.join(t, d.a)
	if got, err := d.poll(d.a, d.memberA, -1); err != nil || int64(len(got)) != d.total {
		t.Fatalf("member A got %d messages (%v), want %d", len(got), err, d.total)
	}
	if err := d.commit(d.a, d.memberA, d.firstCommit); err != nil {
		t.Fatalf("member A's first commit: %v", err)
	}

	// Cut off first, then paused: nothing the new leader sends reaches the old one.
	c.isolate(d.old)
	c.nodes[d.old].pause()
	t.Cleanup(func() {
		if !d.resumed {
			c.nodes[d.old].resume()
		}
	})
	d.nl = c.waitNewLeader(d.old, 30*time.Second)
	d.b = clientOf(d.nl)
	d.memberB = d.join(t, d.b)
	got, err := d.poll(d.b, d.memberB, -1)
	if err != nil || len(got) == 0 || got[0].Offset != d.firstCommit {
		t.Fatalf("member B (through the new leader, node %d) got %d messages starting at %v (%v), want them from the committed offset %d", d.nl+1, len(got), got, err, d.firstCommit)
	}
	return d
}

func (d *deposedGroup) join(t *testing.T, cl *client.Client) string {
	t.Helper()
	m, err := cl.JoinGroup(d.ctx, d.group, client.JoinGroupRequest{Topics: []string{d.topic}, Mode: client.Clustered, SessionTimeoutMS: 30000})
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	return m.MemberID
}

// poll polls once; position >= 0 says the member's last answer was lost (it expects that
// offset next), so the cursor moves back to it.
func (d *deposedGroup) poll(cl *client.Client, member string, position int64) ([]api.Message, error) {
	opts := client.PollOptions{MaxMessages: int(d.total), Wait: 2 * time.Second}
	if position >= 0 {
		opts.Positions = []client.GroupOffset{{Topic: d.topic, Partition: 0, Offset: position}}
	}
	gm, err := cl.PollGroup(d.ctx, d.group, member, opts)
	if err != nil {
		return nil, err
	}
	return gm.Messages, nil
}

func (d *deposedGroup) commit(cl *client.Client, member string, next int64) error {
	return cl.CommitGroup(d.ctx, d.group, member, []client.GroupOffset{{Topic: d.topic, Partition: 0, Offset: next}})
}

// resume lets the old leader run again, still cut off.
func (d *deposedGroup) resume(t *testing.T) {
	d.c.nodes[d.old].resume()
	d.resumed = true
	if s, err := d.c.status(d.old); err == nil {
		t.Logf("old leader node %d after resuming: role %s, term %d, serving %v", d.old+1, s.Role, s.Term, s.Serving)
	}
}

// notAcknowledged checks that err is the 503 of a node that could not confirm it leads.
func (d *deposedGroup) notAcknowledged(t *testing.T, what string, err error) {
	t.Helper()
	if !isCode(err, api.CodeOutcomeUnknown) && !isCode(err, api.CodeNoLeader) {
		t.Fatalf("%s through the deposed leader node %d: %v; want 503 outcome_unknown or no_leader", what, d.old+1, err)
	}
	t.Logf("%s through the deposed leader node %d: %v", what, d.old+1, err)
}

// TestClusterGroupsCommitOnDeposedLeader: the old leader resumes and member A commits
// everything through it. If that is acknowledged, member B's next poll (its last answer lost)
// must not deliver anything below it.
func TestClusterGroupsCommitOnDeposedLeader(t *testing.T) {
	d := newDeposedGroup(t)
	d.resume(t)
	if err := d.commit(d.a, d.memberA, d.total); err != nil {
		d.notAcknowledged(t, "member A's commit", err)
	} else {
		acked := time.Now()
		again, err := d.poll(d.b, d.memberB, d.firstCommit)
		if err != nil {
			t.Fatalf("member B's poll through the new leader: %v", err)
		}
		for _, m := range again {
			if m.Offset < d.total {
				t.Fatalf("the deposed leader node %d acknowledged member A's commit of %d; a poll of member B sent %v later delivered offset %d again (and %d messages in all)",
					d.old+1, d.total, time.Since(acked).Round(time.Millisecond), m.Offset, len(again))
			}
		}
	}
	d.c.heal()
	d.c.waitConverged(60 * time.Second)
}

// TestClusterGroupsPollOnDeposedLeader: member B commits everything through the new leader;
// then the old leader resumes and member A polls through it (its last answer lost): nothing
// below B's acknowledged commit may come back.
func TestClusterGroupsPollOnDeposedLeader(t *testing.T) {
	d := newDeposedGroup(t)
	if err := d.commit(d.b, d.memberB, d.total); err != nil {
		t.Fatalf("member B's commit through the new leader: %v", err)
	}
	acked := time.Now()
	d.resume(t)
	got, err := d.poll(d.a, d.memberA, d.firstCommit)
	if err != nil {
		d.notAcknowledged(t, "member A's poll", err)
	}
	for _, m := range got {
		if m.Offset < d.total {
			t.Fatalf("member B's commit of %d was acknowledged by the new leader; a poll of member A sent %v later to the deposed leader node %d delivered offset %d again (and %d messages in all)",
				d.total, time.Since(acked).Round(time.Millisecond), d.old+1, m.Offset, len(got))
		}
	}
	d.c.heal()
	d.c.waitConverged(60 * time.Second)
}
