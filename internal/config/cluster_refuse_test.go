package config

import (
	"strings"
	"testing"
)

// The coordinator and the outbox relays run on the leader in cluster mode (cmd/imago), so their
// configuration is accepted. --join-cluster lets a node outside the peers start, and excludes
// --bootstrap-cluster.
func TestClusterAcceptsLeaderOnlyServicesAndChecksJoin(t *testing.T) {
	c, err := load(writeFile(t, clusterFile+`
resources:
  wallet: {driver: mysql, dsn: "root@tcp(127.0.0.1:3306)/test"}
outbox:
  - {name: orders, resource: wallet, table: outbox_orders}
`), envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("cluster with resources and an outbox source: %v", err)
	}

	c, err = load(writeFile(t, clusterFile), envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	c.Cluster.NodeID = 4
	c.Cluster.Join = true
	if err := c.Validate(); err != nil {
		t.Fatalf("a joining node outside the peers: %v", err)
	}
	c.Cluster.Bootstrap = true
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "exclude each other") {
		t.Fatalf("bootstrap and join together: %v", err)
	}
}
