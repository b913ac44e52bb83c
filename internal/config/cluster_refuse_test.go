package config

import (
	"strings"
	"testing"
)

// The coordinator and the outbox relay would run on every member; cluster mode refuses them
// until they run on the leader only. --join-cluster lets a node outside the peers start, and
// excludes --bootstrap-cluster.
func TestClusterRefusesLeaderOnlyServicesAndChecksJoin(t *testing.T) {
	c, err := load(writeFile(t, clusterFile+`
resources:
  wallet: {driver: mysql, dsn: "root@tcp(127.0.0.1:3306)/test"}
outbox:
  - {name: orders, resource: wallet, table: outbox_orders}
`), envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Validate()
	for _, want := range []string{"outbox: the outbox relay is not available in cluster mode"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to say %q", err, want)
		}
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
