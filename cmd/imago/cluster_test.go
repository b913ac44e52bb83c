package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/replica"
)

// clusterView serves a canned GET /v1/cluster. It is a test server standing in for a cluster
// member's HTTP door, not a member: the table is built from what the doors answer.
func clusterView(t *testing.T, st *api.ClusterStatus, sawToken *atomic.Value) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/cluster" {
			http.NotFound(w, r)
			return
		}
		if sawToken != nil {
			sawToken.Store(r.Header.Get("Authorization"))
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestClusterStatusTable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String() // node 3: nobody answers there
	ln.Close()

	leader := &api.ClusterStatus{ClusterID: "c0ffee", NodeID: 1, LeaderID: 1, Role: "leader", Term: 7, CommitIndex: 1042, AppliedIndex: 1042, Serving: true}
	follower := &api.ClusterStatus{ClusterID: "c0ffee", NodeID: 2, LeaderID: 1, Role: "follower", Term: 7, CommitIndex: 1042, AppliedIndex: 1040}
	var token1 atomic.Value
	s1 := clusterView(t, leader, &token1)
	s2 := clusterView(t, follower, nil)
	addr := func(s *httptest.Server) string { return s.Listener.Addr().String() }
	nodes := func(lag2, lag3 uint64, reach3 bool) []api.ClusterNode {
		return []api.ClusterNode{
			{ID: 1, HTTPAddr: addr(s1), RaftAddr: "127.0.0.1:7081", Role: "leader", Reachable: true},
			{ID: 2, HTTPAddr: addr(s2), RaftAddr: "127.0.0.1:7082", Role: "follower", Reachable: true, LagEntries: lag2},
			{ID: 3, HTTPAddr: down, RaftAddr: "127.0.0.1:7083", Role: "follower", Reachable: reach3, LagEntries: lag3},
		}
	}
	leader.Nodes = nodes(2, 917, false)
	follower.Nodes = nodes(0, 0, true) // a follower knows no lag; its link to node 3 is up

	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--server", s2.URL, "--token", "t0k", "cluster", "status"}, strings.NewReader(""), &stdout, &stderr)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	t.Logf("\n%s", out)
	if !strings.Contains(out, "cluster c0ffee: answered by node 2 (follower), leader 1, term 7, commit index 1042") {
		t.Errorf("header line missing:\n%s", out)
	}
	for _, row := range []string{
		`(?m)^NODE\s+ROLE\s+TERM\s+APPLIED\s+LAG\s+REACHABLE\s+LEADER$`,
		`(?m)^1\s+leader\s+7\s+1042\s+0\s+yes\s+1$`,
		`(?m)^2 \*\s+follower\s+7\s+1040\s+2\s+yes\s+1$`,
		`(?m)^3\s+follower\s+-\s+-\s+917\s+yes\s+-$`,
	} {
		if !regexp.MustCompile(row).MatchString(out) {
			t.Errorf("no row matching %s in:\n%s", row, out)
		}
	}
	if got, _ := token1.Load().(string); got != "Bearer t0k" {
		t.Errorf("the other node was asked with Authorization %q", got)
	}

	// --json prints the answer of the server asked.
	stdout.Reset()
	if code := run(context.Background(), []string{"--server", s2.URL, "cluster", "status", "--json"}, strings.NewReader(""), &stdout, &stderr); code != exitOK {
		t.Fatalf("--json: exit %d: %s", code, stderr.String())
	}
	var got api.ClusterStatus
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil || got.NodeID != 2 || got.LeaderID != 1 || len(got.Nodes) != 3 {
		t.Fatalf("--json: %v %s", err, stdout.String())
	}
}

// A single server answers 404: the command says so and exits 3.
func TestClusterStatusSingleNode(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":{"code":"not_found","message":"this server is not a cluster member: its configuration has no cluster block (docs/cluster.md)"}}`))
	}))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--server", srv.URL, "cluster", "status"}, strings.NewReader(""), &stdout, &stderr)
	if code != exitNotFound || !strings.Contains(stderr.String(), "not a cluster member") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
}

// serve refuses a cluster configuration that cluster mode cannot honour, before it opens
// anything, naming the key.
func TestServeClusterRefusals(t *testing.T) {
	dir := t.TempDir()
	cluster := `
cluster:
  node_id: 1
  peers:
    - {id: 1, raft_addr: 127.0.0.1:7081, http_addr: 127.0.0.1:8081}
    - {id: 2, raft_addr: 127.0.0.1:7082, http_addr: 127.0.0.1:8082}
    - {id: 3, raft_addr: 127.0.0.1:7083, http_addr: 127.0.0.1:8083}
`
	offsets := "offsets: {store: postgres, dsn: \"postgres://x@127.0.0.1:1/test\"}\n"
	for _, tc := range []struct {
		name, file, want string
	}{
		{"fsync interval", "log: {fsync: \"interval:10ms\"}\n" + offsets + cluster,
			`log.fsync "interval:10ms": interval/never is refused in cluster mode: an acknowledgement needs a quorum's fsync`},
		{"file offsets", cluster, "offsets.store file: shared offset store required: postgres, mysql or zookeeper"},
		{"raft beyond loopback without tls", offsets + cluster + "  raft_addr: 0.0.0.0:7081\n",
			`cluster.raft_addr "0.0.0.0:7081" is not a loopback address and the raft transport is not authenticated`},
		{"raft tls file missing", offsets + cluster + "  tls: {cert_file: " + filepath.Join(dir, "nope.crt") + ", key_file: k.pem, ca_file: ca.pem}\n",
			"cluster.tls.cert_file " + filepath.Join(dir, "nope.crt") + ": no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(dir, tc.name+"-data")
			path := filepath.Join(dir, tc.name+".yaml")
			if err := os.WriteFile(path, []byte("data_dir: "+data+"\n"+tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"serve", "--config", path}, strings.NewReader(""), &stdout, &stderr)
			if code != exitUsage || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, exitUsage, tc.want, stderr.String())
			}
			if _, err := os.Stat(data); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the refused start created the data directory (%v)", err)
			}
		})
	}
}

// TestServeClusterRaftTLS: with cluster.tls serve hands the member the raft transport's TLS made
// from the files; with cluster.insecure_transport it hands none and warns that the raft port is
// unauthenticated.
func TestServeClusterRaftTLS(t *testing.T) {
	orig := replicaStart
	t.Cleanup(func() { replicaStart = orig })
	var got replica.Config
	replicaStart = func(_ context.Context, rc replica.Config, _ *broker.Broker, _ *slog.Logger) (*replica.Member, error) {
		got = rc
		return nil, errors.New("not starting in this test")
	}
	ca := testenv.NewCA(t, "imago cluster CA")
	cert, key, caFile := ca.WriteFiles(t, t.TempDir(), "node1", "10.0.0.1")
	for _, tc := range []struct {
		name     string
		set      func(*config.Cluster)
		wantTLS  bool
		wantWarn bool
	}{
		{"tls", func(c *config.Cluster) { c.TLS = config.ClusterTLS{CertFile: cert, KeyFile: key, CAFile: caFile} }, true, false},
		{"insecure transport", func(c *config.Cluster) { c.InsecureTransport = true }, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := config.Default()
			cfg.Cluster.NodeID = 1
			cfg.Cluster.Peers = []config.ClusterPeer{{ID: 1, RaftAddr: "10.0.0.1:7081", HTTPAddr: "10.0.0.1:8081"}}
			tc.set(&cfg.Cluster)
			var logs bytes.Buffer
			got = replica.Config{}
			s := &server{cfg: cfg, logger: slog.New(slog.NewTextHandler(&logs, nil))}
			if err := s.loadTLS(context.Background()); err != nil {
				t.Fatalf("loadTLS: %v", err)
			}
			if err := s.openCluster(context.Background()); err == nil || !strings.Contains(err.Error(), "not starting in this test") {
				t.Fatalf("openCluster: %v", err)
			}
			if (got.TLS != nil) != tc.wantTLS {
				t.Fatalf("the member's TLS: %v, want set %v", got.TLS, tc.wantTLS)
			}
			warned := strings.Contains(logs.String(), "level=WARN") && strings.Contains(logs.String(), "raft transport runs without authentication")
			if warned != tc.wantWarn {
				t.Fatalf("warned %v, want %v; log:\n%s", warned, tc.wantWarn, logs.String())
			}
			if strings.Contains(logs.String(), "PRIVATE KEY") {
				t.Fatalf("the log shows a key:\n%s", logs.String())
			}
		})
	}
}

// The cluster member outlives the signal that stops serve: SIGTERM cancels serve's context,
// and in-flight requests still need raft to finish; the member stops when serve's closers run
// (after the HTTP server drained), before the broker closes.
func TestClusterMemberOutlivesTheSignal(t *testing.T) {
	orig := replicaStart
	t.Cleanup(func() { replicaStart = orig })
	var got context.Context
	replicaStart = func(ctx context.Context, _ replica.Config, _ *broker.Broker, _ *slog.Logger) (*replica.Member, error) {
		got = ctx
		return nil, errors.New("not starting in this test")
	}
	cfg := config.Default()
	cfg.Cluster.NodeID = 1
	cfg.Cluster.Peers = []config.ClusterPeer{{ID: 1, RaftAddr: "127.0.0.1:7081", HTTPAddr: "127.0.0.1:8081"}}
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{cfg: cfg, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := s.openCluster(ctx); err == nil || !strings.Contains(err.Error(), "join the cluster as node 1") {
		t.Fatalf("openCluster: %v", err)
	}
	cancel() // the signal
	if got == nil || got.Err() != nil {
		t.Fatalf("the member's context ends with serve's (%v): SIGTERM would stop raft before in-flight requests finish", got)
	}
}
