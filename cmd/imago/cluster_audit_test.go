package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// An operator's heuristic decision sent to a follower is forwarded to the leader, whose log
// of it must name the operator's address, not the follower's: with cluster.forward_secret_env
// the follower signs the client's address and the leader checks the signature. The client
// sends from 127.0.0.2 and straight to the follower's door, so that its address differs from
// the 127.0.0.1 of the forwarding proxies between the nodes.
func TestClusterHeuristicAuditNamesClient(t *testing.T) {
	c := newTestCluster(t, 41)
	t.Setenv("TEST_CLUSTER_FORWARD_SECRET", "the e2e cluster's forward secret")
	c.appendConfig([]byte("  forward_secret_env: TEST_CLUSTER_FORWARD_SECRET\n"))
	c.startAll()
	leader := c.waitLeader(30 * time.Second)
	follower := (leader + 1) % clusterSize

	var from string
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err == nil {
				from = conn.LocalAddr().String()
			}
			return conn, err
		},
	}}
	send := func(method, path, body string, want int) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+c.nodes[follower].httpAddr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s %s through node %d: %d %s, want %d", method, path, follower+1, resp.StatusCode, b, want)
		}
	}
	send(http.MethodPut, "/v1/topics/audit.e2e", `{"partitions": 1}`, http.StatusCreated)
	xid := `{"format_id": 7, "gtrid": "6175646974", "bqual": "01"}`
	send(http.MethodPost, "/v1/xa/start", `{"xid": `+xid+`}`, http.StatusOK)
	send(http.MethodPost, "/v1/xa/messages", `{"xid": `+xid+`, "messages": [{"topic": "audit.e2e", "value": 1}]}`, http.StatusOK)
	send(http.MethodPost, "/v1/xa/end", `{"xid": `+xid+`, "flags": "success"}`, http.StatusOK)
	send(http.MethodPost, "/v1/xa/prepare", `{"xid": `+xid+`}`, http.StatusOK)
	send(http.MethodPost, "/v1/xa/heuristic", `{"xid": `+xid+`, "decision": "rollback"}`, http.StatusOK)

	want := `remote="` + from + ` via node ` + strconv.Itoa(follower+1) + `"`
	line := regexp.MustCompile(`msg="heuristic decision".*`)
	b, err := os.ReadFile(c.nodes[leader].logPath)
	if err != nil {
		t.Fatal(err)
	}
	got := line.FindString(string(b))
	if !strings.Contains(got, want) {
		t.Fatalf("the leader (node %d) logged the heuristic decision as %q, want it to say %s", leader+1, got, want)
	}
}
