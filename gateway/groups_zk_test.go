package gateway

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/internal/faultproxy"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/offsetdb"
)

// TestGroupZooKeeperOutage: the ZooKeeper offset store reached through a fault proxy, which
// then accepts connections and answers nothing. A group commit answers 503
// offset_store_unavailable once the flush's timeout passed (not when the ZooKeeper client
// gives its reconnect up, ten times the session timeout), /readyz answers 503 naming the
// offset store, and the 503s are in /metrics. Once the link is back the same commit is 200,
// /readyz 200, and the offset is in ZooKeeper.
func TestGroupZooKeeperOutage(t *testing.T) {
	servers := testenv.ZooKeeperServers(t)
	root := "/" + uniqueName("imago-gwtest-")
	proxy, err := faultproxy.New(servers[0], 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	ctx := context.Background()
	store, err := offsetdb.Open(ctx, offsetdb.Config{Store: "zookeeper", ZooKeeper: []string{proxy.Addr()}, Root: root,
		Logger: quietLogger(), GroupCommit: offsetdb.GroupCommitConfig{FlushTimeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	direct, err := offsetdb.OpenZooKeeper(ctx, offsetdb.Config{ZooKeeper: servers, Root: root, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { direct.Close(); zkDeleteTree(t, servers, root) })

	ts := startServer(t, Options{Offsets: store})
	ts.createTopic("t", 1)
	ts.produceTo("t", 1, 3)
	group := uniqueName("g")
	m := ts.join(group, `{"topics":["t"]}`)
	ts.poll(group, m.MemberID, "")
	commit := func(next int64) string {
		return commitBodyOf(m.MemberID, api.GroupOffset{Topic: "t", Partition: 0, Offset: next})
	}
	ts.must(http.StatusOK, http.MethodPost, "/v1/groups/"+group+"/offsets", commit(1))
	ts.must(http.StatusOK, http.MethodGet, "/readyz", "")

	proxy.Blackhole(faultproxy.Both)
	proxy.DropConnections() // the client reconnects into the blackhole
	// The first commit may meet the dropped connection; the second meets the blackhole.
	for range 2 {
		start := time.Now()
		r := ts.do(http.MethodPost, "/v1/groups/"+group+"/offsets", commit(3))
		took := time.Since(start)
		expectError(t, r, http.StatusServiceUnavailable, api.CodeOffsetStoreUnavailable, "")
		if took > 10*time.Second {
			t.Fatalf("the commit answered after %v; the flush timeout is 2 s", took)
		}
	}
	r := ts.do(http.MethodGet, "/readyz", "")
	expectError(t, r, http.StatusServiceUnavailable, api.CodeNotReady, "")
	if msg := errorBody(t, r).Error.Message; !strings.Contains(msg, "offset store") || !strings.Contains(msg, "zookeeper") {
		t.Fatalf("/readyz does not say the offset store is unreachable: %q", msg)
	}
	metrics := string(ts.must(http.StatusOK, http.MethodGet, "/metrics", "").body)
	if !regexp.MustCompile(`imago_http_requests_total\{code="503",route="[^"]*offsets[^"]*"\} 2`).MatchString(metrics) {
		t.Fatalf("/metrics shows no 503 commit:\n%s", metrics)
	}

	proxy.Heal()
	proxy.DropConnections()
	deadline := time.Now().Add(30 * time.Second)
	for ts.do(http.MethodGet, "/readyz", "").status != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("/readyz not 200 after the heal")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ts.must(http.StatusOK, http.MethodPost, "/v1/groups/"+group+"/offsets", commit(3))
	if o, ok, err := direct.Get(ctx, group, "t", 0); err != nil || !ok || o.Next != 3 {
		t.Fatalf("offset in ZooKeeper after the heal: %+v %v %v", o, ok, err)
	}
}

// zkDeleteTree deletes the znode p and everything under it.
func zkDeleteTree(t *testing.T, servers []string, p string) {
	conn, _, err := zk.Connect(servers, 5*time.Second, zk.WithLogInfo(false))
	if err != nil {
		t.Logf("clean up %s: %v", p, err)
		return
	}
	defer conn.Close()
	var del func(p string)
	del = func(p string) {
		kids, _, err := conn.Children(p)
		if err != nil {
			return
		}
		for _, k := range kids {
			del(p + "/" + k)
		}
		if err := conn.Delete(p, -1); err != nil && !errors.Is(err, zk.ErrNoNode) {
			t.Logf("clean up %s: %v", p, err)
		}
	}
	del(p)
}
