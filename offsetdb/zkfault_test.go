package offsetdb

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/imagomq/imago/internal/faultproxy"
	"github.com/imagomq/imago/internal/testenv"
)

// ZooKeeper faults under the ZooKeeper offset store, through internal/faultproxy between the
// store and the shared ZooKeeper server (never touched): each test has its own root.

// zkFaultStore opens a ZooKeeper store through a fault proxy, and a direct one to read what
// ZooKeeper holds.
func zkFaultStore(t *testing.T, session time.Duration) (via *ZooKeeperStore, direct *ZooKeeperStore, proxy *faultproxy.Proxy) {
	t.Helper()
	servers := testenv.ZooKeeperServers(t)
	root := fmt.Sprintf("/imago-test-%x", rand.Uint64())
	t.Cleanup(func() { zkDeleteAll(t, servers, root) })
	proxy, err := faultproxy.New(servers[0], 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	via, err = OpenZooKeeper(ctx, Config{ZooKeeper: []string{proxy.Addr()}, Root: root, Logger: quietLogger(), zkSessionTimeout: session})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { via.Close() })
	direct, err = OpenZooKeeper(ctx, Config{ZooKeeper: servers, Root: root, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { direct.Close() })
	return via, direct, proxy
}

func zkStored(t *testing.T, s *ZooKeeperStore, k Key) int64 {
	t.Helper()
	o, ok, err := s.Get(context.Background(), k.Group, k.Topic, k.Partition)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return -1
	}
	return o.Next
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestZooKeeperLostAnswer: a commit whose multi reached ZooKeeper and whose answer was cut
// (the link's backward direction blackholed just as the multi is sent) is not acknowledged;
// once the link is back, a retry of it is acknowledged, and a late retry of a lower offset
// changes nothing.
func TestZooKeeperLostAnswer(t *testing.T) {
	t.Parallel()
	s, direct, proxy := zkFaultStore(t, 4*time.Second)
	ctx := context.Background()
	k := Key{"pay", "orders", 0}
	off := func(next int64) []Offset {
		return []Offset{{Group: k.Group, Topic: k.Topic, Partition: k.Partition, Next: next, CommittedBy: "m1"}}
	}
	for _, next := range []int64{10, 20} {
		if err := s.Commit(ctx, off(next)); err != nil {
			t.Fatal(err)
		}
	}
	s.beforeMulti = func() { proxy.Blackhole(faultproxy.Backward) }
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := s.Commit(cctx, off(30))
	cancel()
	s.beforeMulti = nil
	if err == nil {
		t.Fatal("a commit whose answer was lost was acknowledged")
	}
	waitFor(t, 10*time.Second, "the lost answer's multi in ZooKeeper", func() bool { return zkStored(t, direct, k) == 30 })
	proxy.Heal()
	proxy.DropConnections()
	waitFor(t, 30*time.Second, "the retry acknowledged", func() bool { return s.Commit(ctx, off(30)) == nil })
	if err := s.Commit(ctx, off(20)); err != nil {
		t.Fatal(err)
	}
	if got := zkStored(t, direct, k); got != 30 {
		t.Fatalf("stored %d after a retry and a late lower commit, want 30", got)
	}
}

// TestZooKeeperOutageCommitBounded: while ZooKeeper accepts connections and answers nothing,
// a commit fails when its context ends (the Batcher's FlushTimeout, the gateway's commit
// timeout), not when the client library gives its reconnect up (ten times the session
// timeout); nothing of it is acknowledged, and the store commits again once the link is back.
func TestZooKeeperOutageCommitBounded(t *testing.T) {
	t.Parallel()
	s, direct, proxy := zkFaultStore(t, 4*time.Second)
	ctx := context.Background()
	k := Key{"pay", "orders", 1}
	off := func(next int64) []Offset {
		return []Offset{{Group: k.Group, Topic: k.Topic, Partition: k.Partition, Next: next}}
	}
	if err := s.Commit(ctx, off(10)); err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole(faultproxy.Both)
	proxy.DropConnections() // the client reconnects into the blackhole
	for range 3 {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		start := time.Now()
		err := s.Commit(cctx, off(20))
		took := time.Since(start)
		cancel()
		if err == nil {
			t.Fatal("a commit was acknowledged while ZooKeeper answered nothing")
		}
		if took > 3*time.Second {
			t.Fatalf("a commit with a 1 s context returned after %v: %v", took, err)
		}
	}
	if got := zkStored(t, direct, k); got != 10 {
		t.Fatalf("stored %d during the outage, want 10", got)
	}
	proxy.Heal()
	proxy.DropConnections()
	waitFor(t, 30*time.Second, "a commit after the heal", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return s.Commit(cctx, off(20)) == nil
	})
	if got := zkStored(t, direct, k); got != 20 {
		t.Fatalf("stored %d after the heal, want 20", got)
	}
}

// TestZooKeeperSessionExpiry: a blackhole longer than the session timeout expires the
// store's session; once the link is back the store commits on a new session, without a
// restart, and every acknowledged offset is still there.
func TestZooKeeperSessionExpiry(t *testing.T) {
	t.Parallel()
	s, direct, proxy := zkFaultStore(t, 4*time.Second)
	ctx := context.Background()
	k := Key{"pay", "orders", 2}
	off := func(next int64) []Offset {
		return []Offset{{Group: k.Group, Topic: k.Topic, Partition: k.Partition, Next: next}}
	}
	if err := s.Commit(ctx, off(10)); err != nil {
		t.Fatal(err)
	}
	old := s.conn.SessionID()
	probe := s.root + "/session-probe"
	if _, err := s.conn.Create(probe, nil, zk.FlagEphemeral, zk.WorldACL(zk.PermAll)); err != nil {
		t.Fatal(err)
	}
	proxy.Blackhole(faultproxy.Both)
	// The server expires the session once it heard nothing for the negotiated timeout, and
	// deletes the session's ephemeral znode.
	waitFor(t, 30*time.Second, "the session to expire", func() bool {
		ok, _, err := direct.conn.Exists(probe)
		return err == nil && !ok
	})
	proxy.Heal()
	proxy.DropConnections()
	waitFor(t, 30*time.Second, "a commit on a new session", func() bool {
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		return s.Commit(cctx, off(20)) == nil
	})
	if s.conn.SessionID() == old {
		t.Fatal("the commit after the expiry ran on the expired session")
	}
	if got := zkStored(t, direct, k); got != 20 {
		t.Fatalf("stored %d, want 20", got)
	}
}
