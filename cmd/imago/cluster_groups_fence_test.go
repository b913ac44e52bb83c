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

// TestClusterGroupsCommitOnDeposedLeader: a leader that was deposed without knowing it yet
// (cut off from the other members and paused while they elect another, then resumed: it
// still counts itself leader until its quorum check fails) must not acknowledge a commit of
// its group members once the new leader has handed their partition to another member. The
// new owner read the committed offset from the shared store; an acknowledged commit it did
// not see would have it deliver the committed messages again.
//
// Member A joins through the old leader and commits part of what it got; the old leader is
// cut off and paused; member B joins through the new leader, takes the partition and polls
// (reading A's commit); the old leader resumes and A commits everything. If that commit is
// acknowledged, no poll sent after it may deliver a message below it: B polls again, saying
// its last answer was lost (its position is where it started).
func TestClusterGroupsCommitOnDeposedLeader(t *testing.T) {
	seed := clusterSeedFor(t)
	c := newTestCluster(t, seed)
	c.startAll()
	c.waitConverged(60 * time.Second)
	r := c.newRun(uniqueName(t, "e2e-fence-"), 1)
	const total = 20
	old := c.leaderIndex()
	hc := &http.Client{Transport: &http.Transport{Proxy: nil}}
	// Straight to the nodes (no client proxy), one attempt per call: a retry would hide
	// which node answered.
	clientOf := func(i int) *client.Client {
		return client.New("http://"+c.nodes[i].httpAddr, client.WithRetries(1), client.WithHTTPClient(hc))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	msgs := make([]client.Message, total)
	for i := range msgs {
		msgs[i] = client.Message{Value: json.RawMessage(strconv.Itoa(i))}
	}
	if _, err := clientOf(old).Produce(ctx, r.topic, msgs, client.ProduceOptions{}); err != nil {
		t.Fatalf("produce: %v", err)
	}

	group := uniqueName(t, "e2e-fence-group-")
	join := func(cl *client.Client) string {
		t.Helper()
		m, err := cl.JoinGroup(ctx, group, client.JoinGroupRequest{Topics: []string{r.topic}, Mode: client.Clustered, SessionTimeoutMS: 30000})
		if err != nil {
			t.Fatalf("join: %v", err)
		}
		return m.MemberID
	}
	poll := func(cl *client.Client, member string, positions []client.GroupOffset) []api.Message {
		t.Helper()
		gm, err := cl.PollGroup(ctx, group, member, client.PollOptions{MaxMessages: total, Wait: 2 * time.Second, Positions: positions})
		if err != nil {
			t.Fatalf("poll of member %s: %v", member, err)
		}
		return gm.Messages
	}

	a := clientOf(old)
	memberA := join(a)
	if got := poll(a, memberA, nil); len(got) != total {
		t.Fatalf("member A got %d messages, want %d", len(got), total)
	}
	const firstCommit = 5
	if err := a.CommitGroup(ctx, group, memberA, []client.GroupOffset{{Topic: r.topic, Partition: 0, Offset: firstCommit}}); err != nil {
		t.Fatalf("member A's first commit: %v", err)
	}

	// Cut off first, then paused: nothing the new leader sends reaches the old one, which
	// therefore still counts itself leader for about an election timeout after it resumes.
	c.isolate(old)
	c.nodes[old].pause()
	resumed := false
	defer func() {
		if !resumed {
			c.nodes[old].resume()
		}
	}()
	nl := c.waitNewLeader(old, 30*time.Second)
	b := clientOf(nl)
	memberB := join(b)
	gotB := poll(b, memberB, nil)
	if len(gotB) == 0 || gotB[0].Offset != firstCommit {
		t.Fatalf("member B (through the new leader, node %d) got %d messages starting at %v, want them from the committed offset %d", nl+1, len(gotB), gotB, firstCommit)
	}

	c.nodes[old].resume()
	resumed = true
	if s, err := c.status(old); err == nil {
		t.Logf("old leader node %d after resuming: role %s, term %d, serving %v", old+1, s.Role, s.Term, s.Serving)
	}
	err := a.CommitGroup(ctx, group, memberA, []client.GroupOffset{{Topic: r.topic, Partition: 0, Offset: total}})
	if err != nil {
		// Not acknowledged: the member does not know where its offsets stand and joins again.
		if !isCode(err, api.CodeOutcomeUnknown) && !isCode(err, api.CodeNoLeader) {
			t.Fatalf("member A's commit through the deposed leader: %v; want 503 outcome_unknown or no_leader", err)
		}
		t.Logf("member A's commit through the deposed leader node %d was not acknowledged: %v", old+1, err)
	} else {
		acked := time.Now()
		again := poll(b, memberB, []client.GroupOffset{{Topic: r.topic, Partition: 0, Offset: firstCommit}})
		for _, m := range again {
			if m.Offset < total {
				t.Fatalf("the deposed leader node %d acknowledged member A's commit of %d; a poll of member B sent %v later delivered offset %d again (and %d messages in all)",
					old+1, total, time.Since(acked).Round(time.Millisecond), m.Offset, len(again))
			}
		}
	}
	c.heal()
	c.waitConverged(60 * time.Second)
}
