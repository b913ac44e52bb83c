package main

// The harness of the three-process cluster tests (cluster_e2e_test.go): three real `imago
// serve` children in cluster mode, with a fault proxy (internal/faultproxy) on every link:
//
//   - raft links: node i's configuration lists peer j's raft_addr as the address of the proxy
//     raft[i][j], which forwards to j's real raft listener. The transport keeps one outbound
//     connection per peer (cluster/transport.go), so raft[i][j]'s forward direction carries
//     exactly what i sends to j, and a one-way partition is one proxy direction.
//   - forward links: peer j's http_addr in node i's configuration is the proxy fwd[i][j] to j's
//     real HTTP listener, so a follower's forwarding to the leader crosses a proxy too.
//   - client links: the test's clients reach node i through the proxy client[i].
//
// Control calls of the test itself (GET /v1/cluster, the final reads) go to the nodes' real
// addresses. Every node keeps a sync journal (IMAGO_TEST_SYNC_JOURNAL), so a kill can be made a
// power loss (internal/powerloss).

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/internal/faultproxy"
	"github.com/imagomq/imago/internal/powerloss"
	"github.com/imagomq/imago/internal/testenv"
)

// clusterSize is the number of nodes; node ids are 1..clusterSize, index id-1.
const clusterSize = 3

// requireClusterServe skips the test when `imago serve` of this build has no cluster mode
// wired in yet: the configuration has no cluster block, or serve has no --bootstrap-cluster.
func requireClusterServe(t *testing.T) {
	t.Helper()
	if _, ok := reflect.TypeOf(config.Config{}).FieldByName("Cluster"); !ok {
		t.Skip("cluster e2e: skipped, the configuration has no cluster block on this branch yet (serve wiring of issue 13)")
	}
	var out, errb bytes.Buffer
	run(context.Background(), []string{"serve", "--help"}, strings.NewReader(""), &out, &errb)
	if !strings.Contains(out.String()+errb.String(), "--bootstrap-cluster") {
		t.Skip("cluster e2e: skipped, `imago serve` has no --bootstrap-cluster flag on this branch yet (serve wiring of issue 13 not merged)")
	}
}

// cnode is one member: its fixed real addresses, its files and, while it runs, its process.
type cnode struct {
	id       int
	dir      string // the node's directory: config, log, ready file, journal, data
	dataDir  string
	httpAddr string // real listener
	raftAddr string // real listener
	journal  string
	logPath  string
	cfgPath  string

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	paused  bool
}

// testCluster is three nodes and their proxies.
type testCluster struct {
	t      *testing.T
	dir    string
	nodes  [clusterSize]*cnode
	raft   [clusterSize][clusterSize]*faultproxy.Proxy // raft[i][j]: what i sends to j
	fwd    [clusterSize][clusterSize]*faultproxy.Proxy // fwd[i][j]: i's forwarding to j's HTTP door
	client [clusterSize]*faultproxy.Proxy              // the test's clients to node i
	zkRoot string
	http   *http.Client // control calls, no proxy
	// gone marks nodes that are out of the cluster for good (refused to start): the checks
	// and waits leave them out.
	gone [clusterSize]bool
	seed int64
	// logExtra is added to every node's log block (", key: value" pairs), for tests that need
	// small segments or frequent retention; rewriteConfigs applies a change.
	logExtra string
}

// rewriteConfigs writes every node's configuration again (after logExtra changed).
func (c *testCluster) rewriteConfigs() {
	c.t.Helper()
	zk := testenv.ZooKeeperServers(c.t)
	for i := range c.nodes {
		c.writeConfig(i, zk)
	}
}

// newTestCluster prepares three nodes (not started) with their proxies, and a ZooKeeper root of
// its own for the shared offset store (removed at the end).
func newTestCluster(t *testing.T, seed int64) *testCluster {
	t.Helper()
	requireClusterServe(t)
	zkServers := testenv.ZooKeeperServers(t)
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, seed: seed, dir: t.TempDir(), zkRoot: "/imago-e2e-" + hex.EncodeToString(b),
		http: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8}}}
	t.Cleanup(func() { removeZkTree(t, zkServers, c.zkRoot) })
	// The nodes' ports stay reserved (listening) until every proxy has its own port: a port
	// freed at once could be handed to a proxy, and two addresses in a configuration would
	// then be one. They come from outside the ephemeral range (testenv.FreeAddr), so that no
	// outgoing connection takes one between its release and the node's bind.
	var reserved []net.Listener
	reserve := func() string {
		ln, err := net.Listen("tcp", testenv.FreeAddr(t))
		if err != nil {
			t.Fatal(err)
		}
		reserved = append(reserved, ln)
		return ln.Addr().String()
	}
	for i := range c.nodes {
		dir := filepath.Join(c.dir, fmt.Sprintf("node%d", i+1))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		c.nodes[i] = &cnode{id: i + 1, dir: dir, dataDir: filepath.Join(dir, "data"),
			httpAddr: reserve(), raftAddr: reserve(),
			journal: filepath.Join(dir, "sync.journal"), logPath: filepath.Join(dir, "serve.log"),
			cfgPath: filepath.Join(dir, "imago.yaml")}
	}
	newProxy := func(target string) *faultproxy.Proxy {
		seed++
		p, err := faultproxy.New(target, seed)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	for i := range c.nodes {
		c.client[i] = newProxy(c.nodes[i].httpAddr)
		for j := range c.nodes {
			if i != j {
				c.raft[i][j] = newProxy(c.nodes[j].raftAddr)
				c.fwd[i][j] = newProxy(c.nodes[j].httpAddr)
			}
		}
	}
	for _, ln := range reserved {
		ln.Close()
	}
	for i := range c.nodes {
		c.writeConfig(i, zkServers)
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if n.cmd != nil {
				n.kill()
			}
		}
		// A race-enabled child (make race) reports a data race on its stderr, the node log.
		for _, n := range c.nodes {
			if b, err := os.ReadFile(n.logPath); err == nil {
				if i := bytes.Index(b, []byte("WARNING: DATA RACE")); i >= 0 {
					t.Errorf("node %d reported a data race:\n%s", n.id, b[i:min(len(b), i+4000)])
				}
			}
		}
		if t.Failed() {
			for _, n := range c.nodes {
				t.Logf("node %d log, last lines:\n%s", n.id, tail(n.logPath, 30))
				if b, err := os.ReadFile(n.logPath); err == nil {
					c.keep(fmt.Sprintf("node%d.log", n.id), b)
				}
			}
		}
	})
	return c
}

// keep saves a file of a failed test under os.TempDir()/imago-cluster-<test>-<seed> (the
// test's own directory is removed).
func (c *testCluster) keep(name string, data []byte) {
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("imago-cluster-%s-%d", c.t.Name(), c.seed))
	if err := os.MkdirAll(dir, 0o755); err == nil {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err == nil {
			c.t.Logf("kept %s", filepath.Join(dir, name))
		}
	}
}

// writeConfig writes node i's configuration: its own real addresses, its peers behind proxies.
func (c *testCluster) writeConfig(i int, zkServers []string) {
	n := c.nodes[i]
	var peers strings.Builder
	for j, p := range c.nodes {
		raftAddr, httpAddr := p.raftAddr, p.httpAddr
		if j != i {
			raftAddr, httpAddr = c.raft[i][j].Addr(), c.fwd[i][j].Addr()
		}
		fmt.Fprintf(&peers, "    - {id: %d, raft_addr: %q, http_addr: %q}\n", p.id, raftAddr, httpAddr)
	}
	cfg := fmt.Sprintf(`data_dir: %q
http: {addr: %q}
protocol: {enabled: false}
log: {fsync: always%s}
offsets: {store: zookeeper}
zookeeper: {servers: [%s], root: %q}
cluster:
  node_id: %d
  raft_addr: %q
  forward: proxy
  peers:
%s`, n.dataDir, n.httpAddr, c.logExtra, strings.Join(zkServers, ", "), c.zkRoot, n.id, n.raftAddr, peers.String())
	if err := os.WriteFile(n.cfgPath, []byte(cfg), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// startAll starts the three nodes for the first time (bootstrap) and waits for a leader.
// appendConfig adds extra (YAML) to every node's configuration, before startAll.
func (c *testCluster) appendConfig(extra []byte) {
	c.t.Helper()
	for _, nd := range c.nodes {
		f, err := os.OpenFile(nd.cfgPath, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			c.t.Fatal(err)
		}
		_, err = f.Write(extra)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			c.t.Fatal(err)
		}
	}
}

func (c *testCluster) startAll() {
	c.t.Helper()
	for i := range c.nodes {
		c.start(i, true)
	}
	c.waitLeader(30 * time.Second)
}

// start starts node i and waits for its ready file. bootstrap passes --bootstrap-cluster (a
// fresh data directory only).
func (c *testCluster) start(i int, bootstrap bool) {
	c.t.Helper()
	n := c.nodes[i]
	if err := n.launch(bootstrap); err != nil {
		c.t.Fatal(err)
	}
	c.waitReady(i)
}

// waitReady waits for node i's ready file (after launch).
func (c *testCluster) waitReady(i int) {
	c.t.Helper()
	n := c.nodes[i]
	ready := filepath.Join(n.dir, "ready")
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return
		}
		select {
		case <-n.exited:
			c.t.Fatalf("node %d exited before it was ready (%v); log:\n%s", n.id, n.waitErr, tail(n.logPath, 40))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("node %d not ready after 60s; log:\n%s", n.id, tail(n.logPath, 40))
		}
	}
}

// launch starts the process; it does not wait.
func (n *cnode) launch(bootstrap bool) error {
	ready := filepath.Join(n.dir, "ready")
	os.Remove(ready)
	logFile, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logFile, "----- start %s (bootstrap %v)\n", time.Now().Format(time.RFC3339Nano), bootstrap)
	args := []string{"serve", "--config", n.cfgPath, "--ready-file", ready}
	if bootstrap {
		args = append(args, "--bootstrap-cluster")
	}
	n.cmd = imagoCmd(args...)
	n.cmd.Env = append(n.cmd.Env, envSyncJournal+"="+n.journal)
	n.cmd.Stdout, n.cmd.Stderr = logFile, logFile
	n.exited = make(chan struct{})
	n.paused = false
	if err := n.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start node %d: %w", n.id, err)
	}
	exited := n.exited
	cmd := n.cmd
	go func() {
		err := cmd.Wait()
		logFile.Close()
		n.waitErr = err
		close(exited)
	}()
	return nil
}

// running reports whether the node's process is alive (paused counts as alive).
func (n *cnode) running() bool {
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *cnode) kill() {
	if !n.running() {
		return
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

// pause and resume send SIGSTOP and SIGCONT.
func (n *cnode) pause() {
	_ = n.cmd.Process.Signal(syscall.SIGSTOP)
	n.paused = true
}

func (n *cnode) resume() {
	_ = n.cmd.Process.Signal(syscall.SIGCONT)
	n.paused = false
}

// powerLoss cuts node i's files back to what its sync journal says was fsync'd. The node must
// be dead.
func (c *testCluster) powerLoss(i int) powerloss.Loss {
	c.t.Helper()
	n := c.nodes[i]
	if n.running() {
		c.t.Fatalf("power loss of node %d while it runs", n.id)
	}
	rec, err := powerloss.LoadJournal(n.journal)
	if err != nil {
		c.t.Fatal(err)
	}
	loss, err := rec.Drop(n.dataDir)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := rec.Baseline(n.dataDir); err != nil {
		c.t.Fatal(err)
	}
	if err := rec.Save(n.journal); err != nil {
		c.t.Fatal(err)
	}
	return loss
}

// status asks node i for its view of the cluster (GET /v1/cluster, not forwarded).
func (c *testCluster) status(i int) (*api.ClusterStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.nodes[i].httpAddr+"/v1/cluster", nil)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/cluster on node %d: %s", i+1, resp.Status)
	}
	var s api.ClusterStatus
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return nil, fmt.Errorf("GET /v1/cluster on node %d: %w", i+1, err)
	}
	return &s, nil
}

// leaderIndex returns the index of the node that says it is the serving leader, or -1.
func (c *testCluster) leaderIndex() int {
	for i, n := range c.nodes {
		if !n.running() || n.paused {
			continue
		}
		if s, err := c.status(i); err == nil && s.Role == "leader" && s.Serving {
			return i
		}
	}
	return -1
}

// waitLeader waits until a running node leads and serves writes; it returns its index.
func (c *testCluster) waitLeader(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if l := c.leaderIndex(); l >= 0 {
			return l
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no serving leader after %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitConverged waits until every running node knows the same serving leader and has applied
// at least what the leader had committed when asked: the cluster is whole and caught up.
func (c *testCluster) waitConverged(timeout time.Duration) int {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var why string
	for {
		l := c.leaderIndex()
		if l >= 0 {
			why = ""
			ls, err := c.status(l)
			if err != nil {
				why = err.Error()
			}
			for i, n := range c.nodes {
				if why != "" {
					break
				}
				if c.gone[i] {
					continue
				}
				if !n.running() {
					why = fmt.Sprintf("node %d is not running", n.id)
					break
				}
				s, err := c.status(i)
				switch {
				case err != nil:
					why = err.Error()
				case s.LeaderID != uint64(l+1):
					why = fmt.Sprintf("node %d knows leader %d, not %d", n.id, s.LeaderID, l+1)
				case s.AppliedIndex < ls.CommitIndex:
					why = fmt.Sprintf("node %d applied %d of the leader's commit index %d", n.id, s.AppliedIndex, ls.CommitIndex)
				}
			}
			if why == "" {
				return l
			}
		} else {
			why = "no serving leader"
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster not converged after %v: %s", timeout, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// statusLine is every node's view in one line, for reports.
func (c *testCluster) statusLine() string {
	var b strings.Builder
	for i := range c.nodes {
		s, err := c.status(i)
		if err != nil {
			fmt.Fprintf(&b, "[node %d: %v] ", i+1, err)
			continue
		}
		fmt.Fprintf(&b, "[node %d: %s leader %d term %d commit %d applied %d] ", i+1, s.Role, s.LeaderID, s.Term, s.CommitIndex, s.AppliedIndex)
	}
	return b.String()
}

// settle waits until the cluster has converged and the leader's commit index stayed the same
// over several polls: writes the test stopped waiting for (their clients gave up, the server
// goes on) are committed and applied everywhere before the final reads.
func (c *testCluster) settle(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last uint64
	stable := 0
	for stable < 5 {
		if time.Now().After(deadline) {
			c.t.Fatalf("the leader's commit index still moves after %v", timeout)
		}
		l := c.waitConverged(time.Until(deadline))
		s, err := c.status(l)
		pending := err != nil
		if err == nil {
			// Entries the leader has that a member has not matched yet (a proposal whose
			// messages a dropped connection lost) commit later: not settled.
			for _, n := range s.Nodes {
				if !c.gone[n.ID-1] && n.MatchIndex != 0 && n.MatchIndex != s.CommitIndex {
					pending = true
				}
			}
		}
		switch {
		case pending:
			stable = 0
		case s.CommitIndex == last:
			stable++
		default:
			stable, last = 0, s.CommitIndex
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// isolate blackholes, in both directions, every raft and forward link between node i and the
// others; heal lifts every fault on every proxy and cuts the connections that lost bytes.
func (c *testCluster) isolate(i int) {
	for j := range c.nodes {
		if j == i {
			continue
		}
		for _, p := range []*faultproxy.Proxy{c.raft[i][j], c.raft[j][i], c.fwd[i][j], c.fwd[j][i]} {
			p.Blackhole(faultproxy.Both)
		}
	}
}

// oneWay blackholes everything node i sends to the others (outbound true) or everything it
// receives from them (outbound false), on the raft links; forwarding is left alone.
func (c *testCluster) oneWay(i int, outbound bool) {
	for j := range c.nodes {
		if j == i {
			continue
		}
		if outbound {
			c.raft[i][j].Blackhole(faultproxy.Forward)
		} else {
			c.raft[j][i].Blackhole(faultproxy.Forward)
		}
	}
}

// delayAll delays both directions of every link by d.
func (c *testCluster) delayAll(d time.Duration) {
	c.eachProxy(func(p *faultproxy.Proxy) { p.SetDelay(faultproxy.Both, d, 0) })
}

// heal lifts every fault and drops the proxied connections, so streams that lost bytes in a
// blackhole start over (faultproxy's Heal does not mend them).
func (c *testCluster) heal() {
	c.eachProxy(func(p *faultproxy.Proxy) {
		p.Heal()
		p.DropConnections()
	})
}

func (c *testCluster) eachProxy(f func(*faultproxy.Proxy)) {
	for i := range c.nodes {
		f(c.client[i])
		for j := range c.nodes {
			if i != j {
				f(c.raft[i][j])
				f(c.fwd[i][j])
			}
		}
	}
}

// removeZkTree deletes root and everything under it.
func removeZkTree(t *testing.T, servers []string, root string) {
	conn, _, err := zk.Connect(servers, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Logf("zookeeper cleanup of %s: %v", root, err)
		return
	}
	defer conn.Close()
	var del func(p string) error
	del = func(p string) error {
		kids, _, err := conn.Children(p)
		if errors.Is(err, zk.ErrNoNode) {
			return nil
		}
		if err != nil {
			return err
		}
		for _, k := range kids {
			if err := del(p + "/" + k); err != nil {
				return err
			}
		}
		if err := conn.Delete(p, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			return err
		}
		return nil
	}
	if err := del(root); err != nil {
		t.Logf("zookeeper cleanup of %s: %v", root, err)
	}
}
