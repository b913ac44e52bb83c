package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/testenv"
)

// TestClusterOverTLSEndToEnd: three `imago serve` processes whose doors and raft port all speak
// mutual TLS (http.tls with client_ca_file and ca_file, cluster.tls) elect a leader, and a
// write sent to a follower is forwarded to the leader over HTTPS with the follower's own
// certificate, answered by the leader and readable there: what the settings of
// docs/operations.md ("TLS") and docs/cluster.md ("The raft port") give together.
func TestClusterOverTLSEndToEnd(t *testing.T) {
	requireClusterServe(t)
	ca := testenv.NewCA(t, "imago CA")
	dir := t.TempDir()
	var httpAddrs, raftAddrs [3]string
	var peers strings.Builder
	for i := range 3 {
		httpAddrs[i], raftAddrs[i] = testenv.FreeAddr(t), testenv.FreeAddr(t)
		fmt.Fprintf(&peers, "    - {id: %d, raft_addr: %q, http_addr: %q}\n", i+1, raftAddrs[i], httpAddrs[i])
	}
	topic := uniqueName(t, "tls.")
	var srvs [3]*serverProc
	for i := range 3 {
		nodeDir := filepath.Join(dir, fmt.Sprint("node", i+1))
		if err := os.MkdirAll(nodeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		cert, key, caFile := ca.WriteFiles(t, nodeDir, fmt.Sprint("node", i+1), "127.0.0.1")
		cfg := fmt.Sprintf(`http:
  tls: {cert_file: %q, key_file: %q, client_ca_file: %q, ca_file: %q}
protocol: {enabled: false}
offsets: {store: postgres, dsn: %q}
cluster:
  node_id: %d
  raft_addr: %q
  forward: proxy
  tls: {cert_file: %q, key_file: %q, ca_file: %q}
  peers:
%s`, cert, key, caFile, caFile, testenv.PostgresDSN(t), i+1, raftAddrs[i], cert, key, caFile, peers.String())
		cfgPath := filepath.Join(nodeDir, "imago.yaml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		srvs[i] = startServer(t, filepath.Join(nodeDir, "data"), "--config", cfgPath, "--http-addr", httpAddrs[i], "--bootstrap-cluster")
	}
	clientTLS := ca.ClientConfig(ca.Issue(t, "client", "127.0.0.1"))
	clients := make([]*client.Client, 3)
	for i, s := range srvs {
		if !strings.HasPrefix(s.URL, "https://") {
			t.Fatalf("node %d serves %s, want https", i+1, s.URL)
		}
		clients[i] = client.New(s.URL, client.WithTLSConfig(clientTLS))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	leader := -1
	for leader < 0 {
		for i, c := range clients {
			if st, err := c.ClusterStatus(ctx); err == nil && st.Role == "leader" && st.Serving {
				leader = i
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no serving leader over TLS within a minute")
		case <-time.After(50 * time.Millisecond):
		}
	}
	follower := clients[(leader+1)%3]
	if _, err := follower.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatalf("create a topic through a follower: %v", err)
	}
	res, err := follower.Produce(ctx, topic, []client.Message{{Value: []byte(`"paid"`)}}, client.ProduceOptions{IdempotencyKey: "tls-e2e-1"})
	if err != nil {
		t.Fatalf("produce through a follower: %v", err)
	}
	got, err := clients[leader].Fetch(ctx, topic, 0, client.FetchOptions{Offset: 0})
	if err != nil || len(got.Messages) != 1 || string(got.Messages[0].Value) != `"paid"` {
		t.Fatalf("the leader holds %+v (%v) after the follower answered %+v", got, err, res)
	}
}
