package main

// Issue 13, test 4 (second half): the bank test over /v1/global-transactions in cluster mode,
// with the leader (which runs the coordinator) killed: transfers between a MariaDB and a
// PostgreSQL account, each with a settlement message, sent through random nodes while the
// leader is killed with SIGKILL and restarted. At the end (gbankVerify): total balance
// conserved, every committed transfer whole, every rolled-back one absent, every cut one all
// or nothing, one message per committed transfer, and no prepared branch left.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	mrand "math/rand"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/testenv"
)

func TestClusterGlobalBankLeaderKill(t *testing.T) {
	testenv.MySQLDSN(t) // skips (or fails under IMAGO_REQUIRE_SERVICES) without the databases
	testenv.PostgresDSN(t)
	requireClusterServe(t)
	kills := 2
	if *clusterLong {
		kills = 10
	}
	seed := clusterSeedFor(t)
	rng := mrand.New(mrand.NewSource(seed))

	sfx := gbankSuffix(t)
	n := gbankNames{wallet: "e2e_w_" + sfx, wjournal: "e2e_wj_" + sfx, ledger: "e2e_l_" + sfx, ljournal: "e2e_lj_" + sfx, topic: "e2e.bank." + sfx}
	my, pg := gbankDBs(t, n)
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		t.Fatal(err)
	}
	node := hex.EncodeToString(id[:]) // the cluster-wide coordinator node id
	// The resources and operations of the single-node bank test, and a fixed coordinator id.
	cfg, err := os.ReadFile(gbankConfig(t, t.TempDir(), n, fmt.Sprintf("coordinator: {node_id: %q}\n", node)))
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClusterWith(t, seed, string(cfg), []string{envXAGrace + "=1s", envXARecoveryInterval + "=200ms"})
	c.startAll()
	c.waitConverged(60 * time.Second)
	r := c.newRun(n.topic, 2)

	led := &gbankLedger{started: map[string]bool{}, committed: map[string]bool{}, rolledBck: map[string]bool{}, other: map[string]string{}}
	hc := &http.Client{Timeout: 20 * time.Second, Transport: r.hc.Transport}
	var nonce [4]byte
	rand.Read(nonce[:])
	for round := 1; round <= kills; round++ {
		l := c.waitConverged(60 * time.Second)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < gbankWorkers; w++ {
			wrng := mrand.New(mrand.NewSource(rng.Int63()))
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					tid := fmt.Sprintf("%x-%d-%d-%d", nonce, round, w, i)
					if !gbankTransfer(hc, r.url(wrng.Intn(clusterSize), ""), n, tid, wrng, led) {
						sleepCtx(t.Context(), 20*time.Millisecond) // no answer (a killed node): another node next
					}
				}
			}()
		}
		loadFor(time.Duration(500+rng.Intn(1000)) * time.Millisecond)
		c.nodes[l].kill()
		nl := c.waitNewLeader(l, 30*time.Second)
		t.Logf("round %d: leader node %d (the coordinator) killed; node %d leads", round, l+1, nl+1)
		loadFor(1500 * time.Millisecond)
		close(stop)
		wg.Wait()
		c.start(l, false)
	}
	c.settle(60 * time.Second)
	// A last load whose answers all come back, through every node.
	for i := 0; i < 30; i++ {
		gbankTransfer(hc, r.url(i%clusterSize, ""), n, fmt.Sprintf("%x-final-%d", nonce, i), rng, led)
	}

	// Recovery settles on the serving leader: no prepared branch of the coordinator left.
	deadline := time.Now().Add(90 * time.Second)
	for {
		left := gbankPrepared(t, my, pg, node)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prepared branches still left 90s after the last kill: %v", left)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition
	}
	gbankVerify(t, my, pg, n, led, client.New("http://"+c.nodes[0].httpAddr), fmt.Sprintf("cluster, %d leader kills", kills))
}
