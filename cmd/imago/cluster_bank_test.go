package main

import (
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/config"
)

// TestClusterGlobalBankLeaderKill is the bank test over /v1/global-transactions on a three-node
// cluster whose leader (which runs the XA coordinator) is killed with SIGKILL while transfers
// run through every node: totals are conserved, no transfer is half applied, and the new
// leader's coordinator, whose decisions are replicated log records, leaves no prepared branch.
func TestClusterGlobalBankLeaderKill(t *testing.T) {
	clusterBank(t, func(c *testCluster, l, round int) {
		c.nodes[l].kill()
		t.Logf("round %d: leader node %d killed", round, l+1)
		c.waitNewLeader(l, 20*time.Second)
	}, func(c *testCluster, l int) { c.start(l, false) })
}

// TestClusterGlobalBankLeaderPaused: the same with a leader that is cut off from the others and
// paused (SIGSTOP) while transfers run, resumed while still cut off once another leads (it
// counts itself leader until its quorum check fails, with transactions of its own between
// their prepare and their decision, or in phase 2), then let back in. Its decisions written
// after the new election are never committed, its leases keep the new leader's coordinator
// off the databases until it closes its own, and no transfer is half applied.
func TestClusterGlobalBankLeaderPaused(t *testing.T) {
	clusterBank(t, func(c *testCluster, l, round int) {
		c.isolate(l)
		c.nodes[l].pause()
		t.Logf("round %d: leader node %d cut off and paused", round, l+1)
		c.waitNewLeader(l, 20*time.Second)
		time.Sleep(500 * time.Millisecond)
		c.nodes[l].resume()
		time.Sleep(1500 * time.Millisecond)
		c.heal()
	}, func(*testCluster, int) {})
}

// clusterBank runs bank transfers through every node while fault strikes the leader, round
// after round (restart brings the node back), then checks the books.
func clusterBank(t *testing.T, fault func(c *testCluster, l, round int), restart func(c *testCluster, l int)) {
	kills := 2
	if testing.Short() {
		kills = 1
	}
	seed := clusterSeedFor(t)
	rng := mrand.New(mrand.NewSource(seed))
	sfx := gbankSuffix(t)
	n := gbankNames{wallet: "gbk_w_" + sfx, wjournal: "gbk_wj_" + sfx, ledger: "gbk_l_" + sfx, ljournal: "gbk_lj_" + sfx, topic: "gbank." + sfx}
	my, pg := gbankDBs(t, n)
	extra, err := os.ReadFile(gbankConfig(t, t.TempDir(), n, "coordinator: {grace: 1s, recovery_interval: 200ms}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := newTestCluster(t, seed)
	c.appendConfig(extra)
	c.startAll()
	l := c.waitLeader(20 * time.Second)
	url := func(i int) string { return "http://" + c.client[i].Addr() }
	ctx := context.Background()
	if _, err := client.New(url(l)).CreateTopic(ctx, n.topic, client.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	led := &gbankLedger{started: map[string]bool{}, committed: map[string]bool{}, rolledBck: map[string]bool{}, other: map[string]string{}}
	hc := &http.Client{Timeout: 60 * time.Second}
	var nonce [4]byte
	rand.Read(nonce[:])
	for round := 1; round <= kills; round++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < gbankWorkers; w++ {
			wg.Add(1)
			wrng := mrand.New(mrand.NewSource(rng.Int63()))
			go func(w int) {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					tid := fmt.Sprintf("%x-%d-%d-%d", nonce, round, w, i)
					gbankTransfer(hc, url(w%len(c.nodes)), n, tid, wrng, led) // any node: followers forward
					led.mu.Lock()
					answered := led.committed[tid] || led.rolledBck[tid]
					led.mu.Unlock()
					if !answered { // 503 (no leader yet, or its coordinator is still recovering) or no answer: back off as Retry-After asks
						time.Sleep(100 * time.Millisecond)
					}
				}
			}(w)
		}
		time.Sleep(time.Duration(500+rng.Intn(1500)) * time.Millisecond) // a random moment, not a synchronisation
		l = c.leaderIndex()
		if l >= 0 {
			fault(c, l, round)
		}
		close(stop)
		wg.Wait()
		if l >= 0 {
			restart(c, l)
		}
	}
	l = c.waitLeader(20 * time.Second)
	for i := 0; i < 20; i++ {
		gbankTransfer(hc, url(l), n, fmt.Sprintf("%x-final-%d", nonce, i), rng, led)
	}
	node := clusterCoordinatorID(config.Cluster{Peers: []config.ClusterPeer{{ID: 1}, {ID: 2}, {ID: 3}}})
	// Under -short (the race detector's run: one kill, little load) a rollback may not happen.
	gbankCheck(t, my, pg, n, led, client.New(url(l)), node, !testing.Short())
}
