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

// TestClusterOverTLS: three members whose raft transports use mutual TLS replicate produces; a
// fourth with a certificate of the cluster's CA asks the join question, joins and catches up
// over TLS; a node whose certificate another CA signed gets no answer to its join question and
// does not start.
func TestClusterOverTLS(t *testing.T) {
	ca := testenv.NewCA(t, "imago cluster CA")
	member := func(name string, signer *testenv.CA) *cluster.PeerTLS {
		p, err := cluster.NewPeerTLS(signer.Issue(t, name, "127.0.0.1"), ca.Pool())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	root := t.TempDir()
	c := &testCluster{t: t, electionTick: 10}
	for i := 1; i <= 3; i++ {
		c.dirs = append(c.dirs, filepath.Join(root, fmt.Sprintf("node%d", i)))
		c.tls = append(c.tls, member(fmt.Sprintf("node%d", i), ca))
	}
	c.launch()
	l := c.leader()
	if _, err := c.bs[l].CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 10 {
		v := fmt.Sprintf("v%d", i)
		if _, err := c.bs[l].Produce(context.Background(), "t", []broker.Message{{Value: []byte(v)}}, v); err != nil {
			t.Fatalf("produce %s: %v", v, err)
		}
		want = append(want, v)
	}
	for i := range 3 {
		if got := fetchAll(t, c.bs[i], "t", 0, len(want)); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("node %d holds %v, want %v", i+1, got, want)
		}
	}

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	join := func(id uint64, peerTLS *cluster.PeerTLS, wait time.Duration) (*broker.Broker, *Member, error) {
		opts := broker.NewOptions(filepath.Join(root, fmt.Sprintf("node%d", id)))
		opts.Replicated, opts.Logger = true, quiet
		b, err := broker.Open(opts)
		if err != nil {
			t.Fatal(err)
		}
		p := Peer{ID: id, RaftAddr: testenv.FreeAddr(t), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", 18080+id)}
		m, err := Start(context.Background(), Config{NodeID: id, RaftAddr: p.RaftAddr, HTTPAddr: p.HTTPAddr, Peers: c.peers, Join: true, JoinTimeout: wait,
			TickInterval: 10 * time.Millisecond, ElectionTick: 10, TLS: peerTLS}, b, quiet)
		if err != nil {
			b.Close()
			return nil, nil, err
		}
		c.peers = append(c.peers, p)
		return b, m, nil
	}

	// A stranger that trusts the cluster's CA but holds a certificate of its own CA.
	if _, _, err := join(5, member("node5", testenv.NewCA(t, "someone else's CA")), time.Second); err == nil ||
		!strings.Contains(err.Error(), "no serving leader confirmed") || !strings.Contains(err.Error(), "tls") {
		t.Fatalf("a node without a member certificate joining: %v", err)
	}

	b4, m4, err := join(4, member("node4", ca), 10*time.Second)
	if err != nil {
		t.Fatalf("node 4 joining over TLS: %v", err)
	}
	c.dirs, c.bs, c.ms = append(c.dirs, ""), append(c.bs, b4), append(c.ms, m4)
	if err := c.ms[l].AddMember(context.Background(), c.peers[3]); err != nil {
		t.Fatalf("add member 4: %v", err)
	}
	waitFor(t, "node 4 promoted to voter", func() bool { return slices.Contains(c.ms[l].node.Status().Voters, 4) })
	if got := fetchAll(t, b4, "t", 0, len(want)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("node 4 holds %v, want %v", got, want)
	}
}
