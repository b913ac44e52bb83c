// Package cluster holds the configurations of a local three-node cluster
// (examples/cluster/node1.yaml ... node3.yaml, driven by scripts/cluster.sh); this test keeps
// them valid and consistent with each other.
package cluster

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/imagomq/imago/internal/config"
)

func TestNodeConfigs(t *testing.T) {
	var peers []config.ClusterPeer
	for n := uint64(1); n <= 3; n++ {
		path := fmt.Sprintf("node%d.yaml", n)
		c, err := config.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		cl := c.Cluster
		if cl.NodeID != n || cl.RaftAddr != fmt.Sprintf("127.0.0.1:708%d", n) || c.HTTP.Addr != fmt.Sprintf("127.0.0.1:808%d", n) ||
			c.DataDir != fmt.Sprintf("./cluster-data/node%d", n) || c.Protocol.Enabled || c.Offsets.Store != "postgres" {
			t.Errorf("%s: %+v", path, c)
		}
		self, ok := cl.Self()
		if !ok || self.HTTPAddr != c.HTTP.Addr || self.RaftAddr != cl.RaftAddr {
			t.Errorf("%s: its own peer entry %+v does not match http.addr %s and raft_addr %s", path, self, c.HTTP.Addr, cl.RaftAddr)
		}
		if peers == nil {
			peers = cl.Peers
		} else if !reflect.DeepEqual(peers, cl.Peers) {
			t.Errorf("%s: peers %+v differ from node1.yaml's %+v", path, cl.Peers, peers)
		}
	}
}
