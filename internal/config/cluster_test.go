package config

import (
	"strings"
	"testing"
	"time"
)

// clusterFile is node 2 of the three-node example, as docs/cluster.md shows it.
const clusterFile = `
data_dir: ./cluster-data/node2
http:     {addr: 127.0.0.1:8082}
protocol: {enabled: false}
offsets:  {store: postgres, dsn: "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"}
cluster:
  node_id: 2
  raft_addr: 127.0.0.1:7082
  peers:
    - {id: 1, raft_addr: 127.0.0.1:7081, http_addr: 127.0.0.1:8081}
    - {id: 2, raft_addr: 127.0.0.1:7082, http_addr: 127.0.0.1:8082}
    - {id: 3, raft_addr: 127.0.0.1:7083, http_addr: 127.0.0.1:8083}
`

func TestLoadCluster(t *testing.T) {
	c, err := load(writeFile(t, clusterFile), envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	cl := c.Cluster
	if !cl.Enabled() || cl.NodeID != 2 || cl.RaftAddr != "127.0.0.1:7082" || len(cl.Peers) != 3 ||
		cl.Peers[2] != (ClusterPeer{ID: 3, RaftAddr: "127.0.0.1:7083", HTTPAddr: "127.0.0.1:8083"}) {
		t.Fatalf("cluster: %+v", cl)
	}
	if cl.Forward != ForwardProxy || cl.TickInterval != 100*time.Millisecond || cl.ElectionTicks != 10 {
		t.Fatalf("cluster defaults: %+v", cl)
	}
	if self, ok := cl.Self(); !ok || self.HTTPAddr != "127.0.0.1:8082" {
		t.Fatalf("self: %+v %v", self, ok)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}

	// The node id and forward mode from the environment (a replaced machine's new id).
	c, err = load(writeFile(t, clusterFile), envMap(map[string]string{
		"IMAGO_CLUSTER_NODE_ID": "3", "IMAGO_CLUSTER_FORWARD": "redirect", "IMAGO_CLUSTER_TICK_INTERVAL": "50ms",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.NodeID != 3 || c.Cluster.Forward != ForwardRedirect || c.Cluster.TickInterval != 50*time.Millisecond {
		t.Fatalf("environment: %+v", c.Cluster)
	}
	if _, err := load("", envMap(map[string]string{"IMAGO_CLUSTER_NODE_ID": "-1"})); err == nil ||
		!strings.Contains(err.Error(), "IMAGO_CLUSTER_NODE_ID") {
		t.Fatalf("IMAGO_CLUSTER_NODE_ID=-1: %v", err)
	}
	if vars := EnvVars(Default()); vars["IMAGO_CLUSTER_NODE_ID"] != "cluster.node_id" {
		t.Fatalf("IMAGO_CLUSTER_NODE_ID -> %q", vars["IMAGO_CLUSTER_NODE_ID"])
	}
	if _, err := load(writeFile(t, "cluster: {node_id: 1, peer: []}\n"), envMap(nil)); err == nil ||
		!strings.Contains(err.Error(), `unknown field "peer"`) {
		t.Fatalf("unknown cluster key: %v", err)
	}

	// Absent: a single node, and the defaults validate.
	c, err = load("", envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Enabled() {
		t.Fatalf("cluster enabled by default: %+v", c.Cluster)
	}
}

// cluster.forward_secret_env names the variable of the secret members sign forwarded client
// addresses with; the secret comes from there, never from the file, and must be long enough.
func TestLoadClusterForwardSecret(t *testing.T) {
	file := writeFile(t, clusterFile+"  forward_secret_env: IMAGO_TEST_FORWARD_SECRET\n")
	c, err := load(file, envMap(map[string]string{"IMAGO_TEST_FORWARD_SECRET": "sixteen-bytes-ok"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.ForwardSecretEnv != "IMAGO_TEST_FORWARD_SECRET" || c.Cluster.ForwardSecret != "sixteen-bytes-ok" {
		t.Fatalf("forward secret not resolved: env %q", c.Cluster.ForwardSecretEnv)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	for env, want := range map[string]string{
		"":                "IMAGO_TEST_FORWARD_SECRET, which is not set or empty",
		"fifteen-bytes-x": "holds 15 bytes; the forward secret needs at least 16",
	} {
		m := map[string]string{}
		if env != "" {
			m["IMAGO_TEST_FORWARD_SECRET"] = env
		}
		if _, err := load(file, envMap(m)); err == nil || !strings.Contains(err.Error(), want) || (env != "" && strings.Contains(err.Error(), env)) {
			t.Errorf("secret %q: %v, want an error saying %q (and not the secret)", env, err, want)
		}
	}
	if c, err := load(writeFile(t, clusterFile), envMap(nil)); err != nil || c.Cluster.ForwardSecret != "" {
		t.Fatalf("no forward_secret_env: secret set or error %v", err)
	}
}

func TestValidateCluster(t *testing.T) {
	valid := func(c *Config) {
		c.Offsets = Offsets{Store: "postgres", DSN: "postgres://x", GroupCommit: time.Millisecond}
		c.Cluster.NodeID = 1
		c.Cluster.Peers = []ClusterPeer{
			{ID: 1, RaftAddr: "127.0.0.1:7081", HTTPAddr: "127.0.0.1:8081"},
			{ID: 2, RaftAddr: "127.0.0.1:7082", HTTPAddr: "127.0.0.1:8082"},
			{ID: 3, RaftAddr: "127.0.0.1:7083", HTTPAddr: "127.0.0.1:8083"},
		}
	}
	tests := []struct {
		name    string
		mutate  func(c *Config)
		wantErr []string // nil: valid
	}{
		{name: "three peers", mutate: func(c *Config) {}},
		{name: "mysql offsets", mutate: func(c *Config) { c.Offsets.Store = "mysql" }},
		{name: "zookeeper offsets", mutate: func(c *Config) { c.Offsets.Store = "zookeeper"; c.ZooKeeper.Servers = HostList{"127.0.0.1:2181"} }},
		{name: "redirect", mutate: func(c *Config) { c.Cluster.Forward = ForwardRedirect }},
		{name: "one peer", mutate: func(c *Config) { c.Cluster.Peers = c.Cluster.Peers[:1] }},
		{name: "raft listen address of its own", mutate: func(c *Config) { c.Cluster.RaftAddr = "127.0.0.9:7081" }},
		{name: "fsync interval refused", mutate: func(c *Config) { c.Log.Fsync = "interval:10ms" },
			wantErr: []string{`log.fsync "interval:10ms": interval/never is refused in cluster mode: an acknowledgement needs a quorum's fsync`}},
		{name: "fsync never refused", mutate: func(c *Config) { c.Log.Fsync = "never" },
			wantErr: []string{`log.fsync "never": interval/never is refused in cluster mode`}},
		{name: "file offsets refused", mutate: func(c *Config) { c.Offsets.Store = "file" },
			wantErr: []string{"offsets.store file: shared offset store required: postgres, mysql or zookeeper"}},
		{name: "no node id", mutate: func(c *Config) { c.Cluster.NodeID = 0 },
			wantErr: []string{"cluster.node_id is missing or 0"}},
		{name: "node id not a peer", mutate: func(c *Config) { c.Cluster.NodeID = 4 },
			wantErr: []string{"cluster.node_id 4 is not among the ids of cluster.peers"}},
		{name: "no peers", mutate: func(c *Config) { c.Cluster.Peers = nil },
			wantErr: []string{"cluster.peers is empty"}},
		{name: "two peers", mutate: func(c *Config) { c.Cluster.Peers = c.Cluster.Peers[:2] },
			wantErr: []string{"cluster.peers has 2 members: a raft group needs an odd number of voters"}},
		{name: "zero peer id", mutate: func(c *Config) { c.Cluster.Peers[2].ID = 0 },
			wantErr: []string{"cluster.peers[2]: id is missing or 0"}},
		{name: "duplicate peer id", mutate: func(c *Config) { c.Cluster.Peers[2].ID = 1 },
			wantErr: []string{"cluster.peers[2]: id 1 is also the id of cluster.peers[0]"}},
		{name: "duplicate raft addr", mutate: func(c *Config) { c.Cluster.Peers[1].RaftAddr = "127.0.0.1:7081" },
			wantErr: []string{`cluster.peers[1].raft_addr "127.0.0.1:7081" is also the raft_addr of cluster.peers[0]`}},
		{name: "duplicate http addr", mutate: func(c *Config) { c.Cluster.Peers[2].HTTPAddr = "127.0.0.1:8082" },
			wantErr: []string{`cluster.peers[2].http_addr "127.0.0.1:8082" is also the http_addr of cluster.peers[1]`}},
		{name: "peer address without port", mutate: func(c *Config) { c.Cluster.Peers[1].HTTPAddr = "127.0.0.1" },
			wantErr: []string{`cluster.peers[1].http_addr "127.0.0.1": want host:port`}},
		{name: "peer address without host", mutate: func(c *Config) { c.Cluster.Peers[1].RaftAddr = ":7082" },
			wantErr: []string{`cluster.peers[1].raft_addr ":7082": the host is empty`}},
		{name: "peer address port 0", mutate: func(c *Config) { c.Cluster.Peers[0].RaftAddr = "127.0.0.1:0" },
			wantErr: []string{`cluster.peers[0].raft_addr "127.0.0.1:0": port "0"`}},
		{name: "bad raft listen address", mutate: func(c *Config) { c.Cluster.RaftAddr = "localhost" },
			wantErr: []string{`cluster.raft_addr "localhost": want host:port`}},
		{name: "raft on every interface without tokens", mutate: func(c *Config) { c.Cluster.RaftAddr = "0.0.0.0:7081" },
			wantErr: []string{`cluster.raft_addr "0.0.0.0:7081" is not a loopback address`, "Set cluster.tls", "cluster.insecure_transport: true"}},
		{name: "peer raft addr not loopback without tokens", mutate: func(c *Config) { c.Cluster.Peers[0].RaftAddr = "10.0.0.1:7081" },
			wantErr: []string{`cluster.raft_addr "10.0.0.1:7081" is not a loopback address`}},
		// Tokens guard the HTTP and text doors, not the raft port (clustertls_test.go).
		{name: "raft on every interface with tokens only", mutate: func(c *Config) {
			c.Auth.Tokens = []Token{{Name: "ops", Token: "t0k3n", Admin: true}}
			c.Cluster.RaftAddr = "0.0.0.0:7081"
		}, wantErr: []string{`cluster.raft_addr "0.0.0.0:7081" ` + refuseInsecureRaft}},
		{name: "raft on every interface, insecure transport", mutate: func(c *Config) {
			c.Auth.Tokens = []Token{{Name: "ops", Token: "t0k3n", Admin: true}}
			c.Cluster.RaftAddr = "0.0.0.0:7081"
			c.Cluster.InsecureTransport = true
		}},
		{name: "forward", mutate: func(c *Config) { c.Cluster.Forward = "teleport" },
			wantErr: []string{`cluster.forward "teleport": want proxy`}},
		{name: "tick", mutate: func(c *Config) { c.Cluster.TickInterval = 0 }, wantErr: []string{"cluster.tick_interval 0s"}},
		{name: "election ticks", mutate: func(c *Config) { c.Cluster.ElectionTicks = 1 }, wantErr: []string{"cluster.election_ticks 1"}},
		{name: "every problem at once", mutate: func(c *Config) {
			c.Log.Fsync = "never"
			c.Offsets.Store = "file"
			c.Cluster.NodeID = 9
		}, wantErr: []string{"log.fsync", "offsets.store file", "cluster.node_id 9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			valid(&c)
			tt.mutate(&c)
			checkErrs(t, c.Validate(), tt.wantErr)
		})
	}
}
