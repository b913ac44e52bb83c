package main

import (
	"encoding/json"
	"path"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/imagomq/imago/internal/testenv"
)

// TestClusterZooKeeperDirectory: the members publish a read-only directory in ZooKeeper: one
// ephemeral znode per running member and one naming the serving leader, which follows a
// leader kill. (ZooKeeper decides nothing: raft elected the leader the znode names.)
func TestClusterZooKeeperDirectory(t *testing.T) {
	c := newTestCluster(t, clusterSeedFor(t))
	c.startAll()
	l := c.waitLeader(20 * time.Second)
	conn, _, err := zk.Connect(testenv.ZooKeeperServers(t), 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	base := path.Join(c.zkRoot, "cluster", "imago-1-2-3")
	leaderIs := func(want int) func() bool {
		return func() bool {
			b, _, err := conn.Get(path.Join(base, "leader"))
			var n zkDirNode
			return err == nil && json.Unmarshal(b, &n) == nil && n.ID == uint64(want+1) && n.HTTPAddr != ""
		}
	}
	waitUntil(t, 20*time.Second, "the leader znode", leaderIs(l))
	waitUntil(t, 20*time.Second, "three member znodes", func() bool {
		kids, _, err := conn.Children(path.Join(base, "nodes"))
		return err == nil && len(kids) == 3
	})
	c.nodes[l].kill()
	c.gone[l] = true
	nl := c.waitNewLeader(l, 20*time.Second)
	waitUntil(t, 30*time.Second, "the leader znode to name the new leader", leaderIs(nl))
}
