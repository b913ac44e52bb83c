package config

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// Forward modes of Cluster.Forward: what a node that is not the leader does with a request
// that only the leader may answer.
const (
	// ForwardProxy sends the request to the leader and returns the leader's answer (the default).
	ForwardProxy = "proxy"
	// ForwardRedirect answers 307 with Location at the leader's http_addr.
	ForwardRedirect = "redirect"
)

// Cluster makes this server one member of a raft cluster (docs/cluster.md). Absent (no
// node_id, raft_addr or peers): a single node, everything else works alone.
type Cluster struct {
	// NodeID is this node's id among Peers. An id is used once: a replaced machine joins
	// under a new id.
	NodeID uint64 `yaml:"node_id"`
	// RaftAddr is where this node's raft transport listens. Default: its peer's raft_addr.
	RaftAddr string `yaml:"raft_addr"`
	// Peers are the voting members at bootstrap, this node included (three, usually).
	Peers []ClusterPeer `yaml:"peers"`
	// Forward is proxy (the default: a node that is not the leader forwards requests to it
	// and returns its answer) or redirect (it answers 307 with the leader's URL).
	Forward string `yaml:"forward"`
	// TickInterval is one raft tick. Default 100ms.
	TickInterval time.Duration `yaml:"tick_interval"`
	// ElectionTicks is how many ticks without a leader start an election. Default 10.
	ElectionTicks int `yaml:"election_ticks"`
	// ForwardSecretEnv names the environment variable that holds the forward secret, the
	// same on every member (at least 16 bytes): a member that forwards a request to the leader
	// signs the client's address with it, so that the leader's audit records (an operator's
	// resolve of a global transaction, a heuristic decision) name the client, not the member.
	// Unset: the leader records a forwarded request by the member's address, marked so.
	ForwardSecretEnv string `yaml:"forward_secret_env"`
	// ForwardSecret is the value of the variable ForwardSecretEnv names, filled by Load; never
	// read from the file.
	ForwardSecret string `yaml:"-"`
	// TLS makes everything on the raft port (raft messages, snapshot file copies, join
	// questions) mutual TLS between the members (clustertls.go). A raft address that listens
	// on anything but loopback needs it, or InsecureTransport.
	TLS ClusterTLS `yaml:"tls"`
	// InsecureTransport lets the raft port listen on a non-loopback address without TLS: the
	// operator states that a private network admits nothing but the members, since whoever
	// reaches the port can rewrite or read every acknowledged message. serve logs a warning.
	InsecureTransport bool `yaml:"insecure_transport"`

	// Bootstrap and Join are serve's --bootstrap-cluster and --join-cluster, never read from a
	// file: a data directory without raft state starts only with one of them (docs/cluster.md).
	// Bootstrap starts a new cluster of Peers; Join starts a node that the cluster added with
	// POST /v1/cluster/members, which then need not be among Peers (the members it contacts).
	// Validate accepts a joining node's id among Peers (a member that joined long ago may list
	// itself and keep the flag); replica.Start refuses it, as any id the leader says is not
	// new, when the data directory has no raft state: that is a wiped member, which must not
	// vote again. Only Start knows whether the directory has raft state.
	Bootstrap bool `yaml:"-"`
	Join      bool `yaml:"-"`
}

// ClusterPeer is one member of Cluster.Peers.
type ClusterPeer struct {
	// ID is the member's id: non-zero, unique, never reused.
	ID uint64 `yaml:"id"`
	// RaftAddr is host:port of its raft transport.
	RaftAddr string `yaml:"raft_addr"`
	// HTTPAddr is host:port of its HTTP door: where other nodes forward requests to and
	// where redirects point.
	HTTPAddr string `yaml:"http_addr"`
}

// Cluster defaults.
const (
	DefaultTickInterval  = 100 * time.Millisecond
	DefaultElectionTicks = 10
)

// Enabled reports whether the cluster block is configured.
func (c Cluster) Enabled() bool {
	return c.NodeID != 0 || c.RaftAddr != "" || len(c.Peers) > 0
}

// Self returns this node's entry in Peers.
func (c Cluster) Self() (ClusterPeer, bool) {
	for _, p := range c.Peers {
		if p.ID == c.NodeID {
			return p, true
		}
	}
	return ClusterPeer{}, false
}

// ListenRaftAddr is the address the raft transport listens on: RaftAddr, else this node's
// peer entry's raft_addr.
func (c Cluster) ListenRaftAddr() string {
	if c.RaftAddr != "" {
		return c.RaftAddr
	}
	self, _ := c.Self()
	return self.RaftAddr
}

// MinForwardSecret is the shortest forward secret accepted, in bytes.
const MinForwardSecret = 16

// resolveForwardSecret fills ForwardSecret from the variable ForwardSecretEnv names.
func (c *Cluster) resolveForwardSecret(lookup func(string) (string, bool)) error {
	if c.ForwardSecretEnv == "" {
		return nil
	}
	v, ok := lookup(c.ForwardSecretEnv)
	switch {
	case !ok || v == "":
		return fmt.Errorf("cluster.forward_secret_env names %s, which is not set or empty; export it (the same secret on every member) or remove the key", c.ForwardSecretEnv)
	case len(v) < MinForwardSecret:
		return fmt.Errorf("cluster.forward_secret_env: %s holds %d bytes; the forward secret needs at least %d", c.ForwardSecretEnv, len(v), MinForwardSecret)
	}
	c.ForwardSecret = v
	return nil
}

// Messages of the cluster-mode refusals (the tests and docs/cluster.md quote them).
const (
	refuseFsync   = "interval/never is refused in cluster mode: an acknowledgement needs a quorum's fsync; set log.fsync: always"
	refuseOffsets = "shared offset store required: postgres, mysql or zookeeper (each node's file store would keep offsets of its own, lost on failover)"
)

// validateCluster checks the cluster block and what cluster mode requires of the rest of the
// configuration. It says nothing when the block is absent.
func (c Config) validateCluster() []error {
	cl := c.Cluster
	if !cl.Enabled() {
		return nil
	}
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.Log.Fsync != "always" {
		add("log.fsync %q: %s", c.Log.Fsync, refuseFsync)
	}
	if c.Offsets.Store == "file" {
		add("offsets.store file: %s", refuseOffsets)
	}
	switch cl.Forward {
	case ForwardProxy, ForwardRedirect:
	default:
		add("cluster.forward %q: want proxy (forward to the leader, the default) or redirect (answer 307)", cl.Forward)
	}
	if cl.TickInterval < time.Millisecond || cl.TickInterval > 10*time.Second {
		add("cluster.tick_interval %s: want 1ms..10s (default %s)", cl.TickInterval, DefaultTickInterval)
	}
	if cl.ElectionTicks < 3 || cl.ElectionTicks > 1000 {
		add("cluster.election_ticks %d: want 3..1000 (default %d)", cl.ElectionTicks, DefaultElectionTicks)
	}

	if cl.NodeID == 0 {
		add("cluster.node_id is missing or 0: set it to this node's id in cluster.peers")
	}
	switch n := len(cl.Peers); {
	case n == 0:
		add("cluster.peers is empty: list every voting member ({id, raft_addr, http_addr}), this node included")
	case n%2 == 0 && !cl.Join:
		add("cluster.peers has %d members: a raft group needs an odd number of voters (three is usual); with an even number one more failure than with one fewer stops writes", n)
	case n > 7:
		add("cluster.peers has %d members: at most 7 voters are supported", n)
	}
	ids := map[uint64]int{}
	raftAddrs := map[string]int{}
	httpAddrs := map[string]int{}
	for i, p := range cl.Peers {
		where := fmt.Sprintf("cluster.peers[%d]", i)
		if p.ID == 0 {
			add("%s: id is missing or 0: give each peer a unique non-zero id", where)
		} else if j, dup := ids[p.ID]; dup {
			add("%s: id %d is also the id of cluster.peers[%d]: ids must be unique", where, p.ID, j)
		} else {
			ids[p.ID] = i
		}
		for _, a := range []struct {
			key, addr string
			seen      map[string]int
		}{{"raft_addr", p.RaftAddr, raftAddrs}, {"http_addr", p.HTTPAddr, httpAddrs}} {
			if err := checkPeerAddr(a.addr); err != nil {
				add("%s.%s %q: %v", where, a.key, a.addr, err)
				continue
			}
			if j, dup := a.seen[a.addr]; dup {
				add("%s.%s %q is also the %s of cluster.peers[%d]", where, a.key, a.addr, a.key, j)
			}
			a.seen[a.addr] = i
		}
	}
	if cl.Bootstrap && cl.Join {
		add("--bootstrap-cluster and --join-cluster exclude each other: bootstrap starts a new cluster, join enters an existing one")
	}
	if cl.Join && cl.ListenRaftAddr() == "" {
		add("cluster.raft_addr is required with --join-cluster: the address this node's raft transport listens on")
	}
	if cl.NodeID != 0 && len(cl.Peers) > 0 && !cl.Join {
		if _, ok := ids[cl.NodeID]; !ok {
			add("cluster.node_id %d is not among the ids of cluster.peers: list this node in cluster.peers", cl.NodeID)
		}
	}
	if cl.RaftAddr != "" {
		if _, _, err := net.SplitHostPort(cl.RaftAddr); err != nil {
			add("cluster.raft_addr %q: want host:port such as 127.0.0.1:7081", cl.RaftAddr)
		}
	}
	errs = append(errs, cl.validateTransport()...)
	return errs
}

// checkPeerAddr checks a peer's host:port: a host and a non-zero port (other nodes dial it).
func checkPeerAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port such as 127.0.0.1:7081")
	}
	if host == "" {
		return fmt.Errorf("the host is empty: other nodes dial this address, name the host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want 1..65535 (other nodes dial this address: port 0 cannot be dialled)", port)
	}
	return nil
}
