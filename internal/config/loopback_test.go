package config

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

// TestLocalhostMustResolveToLoopback: the name localhost counts as loopback only when every
// address it resolves to is loopback. A listener on "localhost:8080" binds what the name
// resolves to, so a hosts file mapping localhost to the machine's network address would
// otherwise open a door without tokens to the network.
func TestLocalhostMustResolveToLoopback(t *testing.T) {
	tests := []struct {
		name     string
		resolves []string
		err      error
		want     bool
	}{
		{name: "loopback", resolves: []string{"127.0.0.1", "::1"}, want: true},
		{name: "network address", resolves: []string{"192.0.2.2"}},
		{name: "one of them elsewhere", resolves: []string{"127.0.0.1", "2001:db8::1"}},
		{name: "does not resolve", err: errors.New("no such host")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := lookupIP
			t.Cleanup(func() { lookupIP = old })
			lookupIP = func(_ context.Context, host string) ([]net.IP, error) {
				var ips []net.IP
				for _, s := range tt.resolves {
					ips = append(ips, net.ParseIP(s))
				}
				return ips, tt.err
			}
			for _, addr := range []string{"localhost:8080", "LOCALHOST:0"} {
				if got := IsLoopback(addr); got != tt.want {
					t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, tt.want)
				}
			}
			c := Default()
			c.HTTP.Addr, c.Protocol.Addr = "localhost:8080", "localhost:8123"
			c.Cluster = Cluster{NodeID: 1, RaftAddr: "localhost:7081", Forward: ForwardProxy, TickInterval: DefaultTickInterval, ElectionTicks: DefaultElectionTicks,
				Peers: []ClusterPeer{{ID: 1, RaftAddr: "127.0.0.1:7081", HTTPAddr: "127.0.0.1:8081"}}}
			c.Offsets.Store = "postgres"
			c.Offsets.DSN = "postgres://127.0.0.1/x"
			err := c.Validate()
			for _, key := range []string{"http.addr", "protocol.addr", "cluster.raft_addr"} {
				if refused := err != nil && strings.Contains(err.Error(), key+" "); refused == tt.want {
					t.Errorf("%s on localhost: refused %v, want %v (%v)", key, refused, !tt.want, err)
				}
			}
		})
	}
}
