package replica

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/cluster"
	"github.com/imagomq/imago/internal/testenv"
)

// startJoining opens a broker in dir and starts a member with --join-cluster under p, with
// peers as the members it contacts. On error nothing is left open.
func startJoining(t *testing.T, dir string, p Peer, peers []Peer, wait time.Duration) (*broker.Broker, *Member, error) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	opts := broker.NewOptions(dir)
	opts.Replicated, opts.Logger = true, quiet
	b, err := broker.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Start(context.Background(), Config{NodeID: p.ID, RaftAddr: p.RaftAddr, HTTPAddr: p.HTTPAddr, Peers: peers, Join: true, JoinTimeout: wait, TickInterval: 10 * time.Millisecond, ElectionTick: 10}, b, quiet)
	if err != nil {
		b.Close()
		return nil, nil, err
	}
	return b, m, nil
}

// wantReplaceAdvice checks that a refusal tells the operator to replace the node under a new
// id, as docs/cluster.md's runbook does.
func wantReplaceAdvice(t *testing.T, err error, id uint64) {
	t.Helper()
	for _, want := range []string{fmt.Sprintf("DELETE /v1/cluster/members/%d", id), "POST /v1/cluster/members", "new node id", "Runbook: replace a node"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("the refusal does not say %q: %v", want, err)
		}
	}
}

// A voter the cluster started with, whose data directory was wiped, is refused when it is
// started with --join-cluster under its old id, even with no other node up to ask. Let in, it
// would vote with an empty log for a node that missed acknowledged writes.
func TestWipedBootstrapVoterIsRefusedWithJoin(t *testing.T) {
	c := newTestCluster(t)
	l := c.leader()
	if _, err := c.bs[l].CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	f, g := (l+1)%3, (l+2)%3
	// g misses the acknowledged writes.
	c.stop(g)
	for i := range 5 {
		if _, err := c.bs[l].Produce(context.Background(), "t", []broker.Message{{Value: []byte(fmt.Sprint("v", i))}}, ""); err != nil {
			t.Fatalf("produce with two of three: %v", err)
		}
	}
	c.stop(l)
	c.stop(f)
	// f's directory is wiped; the operator starts it with --join-cluster under its old id.
	c.dirs[f] = filepath.Join(t.TempDir(), "wiped")
	b, m, err := startJoining(t, c.dirs[f], c.peers[f], c.peers, time.Second)
	if err != nil {
		wantReplaceAdvice(t, err, uint64(f+1))
		return
	}
	// What letting it in costs: with g it elects g, which lacks the acknowledged writes.
	c.bs[f], c.ms[f] = b, m
	c.start(g, false)
	waitFor(t, "a leader", func() bool { return c.ms[g].Serving() })
	res, err := c.bs[g].Fetch(context.Background(), "t", 0, broker.FetchOptions{Offset: 0, MaxMessages: 100, MaxBytes: 1 << 20})
	t.Fatalf("a wiped voter was let in with --join-cluster under its old id; node %d now serves writes with %d of 5 acknowledged messages (err %v)", g+1, len(res.Messages), err)
}

// A node added later (in no configuration's peers) joins the runbook's way: added first, then
// started with an empty directory. Once it is a voter, a wiped copy of it started with
// --join-cluster under the same id is refused on the leader's word; so is the id once removed.
func TestWipedJoinedVoterIsRefusedByTheLeader(t *testing.T) {
	c := newTestCluster(t)
	l := c.leader()
	p4 := Peer{ID: 4, RaftAddr: testenv.FreeAddr(t), HTTPAddr: "127.0.0.1:18084"}
	if err := c.ms[l].AddMember(context.Background(), p4); err != nil {
		t.Fatalf("add member 4: %v", err)
	}
	// The log is far shorter than the promoter's allowance, but a learner that never answered
	// stays a learner: promoted, its id would be a voter's when its machine starts.
	after := c.ms[l].promoteRounds.Load() + 2
	waitFor(t, "two promoter rounds", func() bool { return c.ms[l].promoteRounds.Load() >= after })
	if st := c.ms[l].node.Status(); !slices.Contains(st.Learners, 4) {
		t.Fatalf("node 4 was promoted before its machine started (voters %v, learners %v)", st.Voters, st.Learners)
	}
	b4, m4, err := startJoining(t, filepath.Join(t.TempDir(), "node4"), p4, c.peers, 0)
	if err != nil {
		t.Fatalf("node 4, added and then started, is refused: %v", err)
	}
	waitFor(t, "node 4 promoted to voter", func() bool {
		return slices.Contains(c.ms[l].node.Status().Voters, 4)
	})
	if _, err := c.bs[l].CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	m4.Stop()
	b4.Close()

	// Node 4's directory is wiped; the operator starts it again the way it first joined.
	_, _, err = startJoining(t, filepath.Join(t.TempDir(), "node4-wiped"), p4, c.peers, 0)
	if err == nil {
		t.Fatal("a wiped voter that joined after the start was let in again under its old id")
	}
	if !strings.Contains(err.Error(), "counts node 4 as a voter") {
		t.Fatalf("refusal: %v, want the leader's word that node 4 is a voter", err)
	}
	wantReplaceAdvice(t, err, 4)

	// The runbook: remove it, and the removed id stays refused.
	l = c.leader()
	if err := c.ms[l].RemoveMember(context.Background(), 4); err != nil {
		t.Fatalf("remove member 4: %v", err)
	}
	_, _, err = startJoining(t, filepath.Join(t.TempDir(), "node4-again"), p4, c.peers, 0)
	if err == nil || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("a removed id joining again: %v, want a refusal naming the removal", err)
	}
}

// Without a serving leader to confirm that its id is new, a node with no raft state does not
// join: it waits JoinTimeout for an answer and stops with the answers it got.
func TestJoinWithoutALeaderIsRefused(t *testing.T) {
	peers := []Peer{
		{ID: 1, RaftAddr: testenv.FreeAddr(t), HTTPAddr: "127.0.0.1:18081"},
		{ID: 2, RaftAddr: testenv.FreeAddr(t), HTTPAddr: "127.0.0.1:18082"},
		{ID: 3, RaftAddr: testenv.FreeAddr(t), HTTPAddr: "127.0.0.1:18083"},
	}
	p4 := Peer{ID: 4, RaftAddr: testenv.FreeAddr(t), HTTPAddr: "127.0.0.1:18084"}
	began := time.Now()
	_, _, err := startJoining(t, filepath.Join(t.TempDir(), "node4"), p4, peers, 300*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no serving leader confirmed") {
		t.Fatalf("join with nobody to ask: %v, want a refusal", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Fatalf("the refusal took %s with a 300ms join timeout", d)
	}
}

// The leader's answer decides; a learner that already acknowledged entries held them in a
// directory that is gone.
func TestJudgeJoin(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		info cluster.JoinInfo
		want string // "" when the join is let in
	}{
		{cluster.JoinInfo{Confirmed: true}, ""},
		{cluster.JoinInfo{Confirmed: true, Learner: true}, ""},
		{cluster.JoinInfo{Confirmed: true, Learner: true, Match: 17}, "learner that already holds entries up to 17"},
		{cluster.JoinInfo{Confirmed: true, Voter: true}, "as a voter"},
		{cluster.JoinInfo{Confirmed: true, Removed: true}, "removed"},
	} {
		err := judgeJoin(tc.info, 1, 4, "/data", quiet)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: refused: %v", tc.info, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: %v, want a refusal saying %q", tc.info, err, tc.want)
		}
	}
}
