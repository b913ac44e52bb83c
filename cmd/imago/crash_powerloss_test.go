package main

// The crash test in power-loss mode: kill -9 never loses what reached the page cache, a power
// loss loses everything no fsync covered. The server runs with the test-only sync journal
// (IMAGO_TEST_SYNC_JOURNAL): every successful fsync is recorded before anything depending on
// it is acknowledged. Each round:
//
// Even rounds are the plain power loss: keyed load, then kill -9 and, at once, every file cut
// back to what was synced; restart and check. Odd rounds:
//
//  1. keyed produce load (every request has an Idempotency-Key), then kill -9;
//  2. restart on what the kill left and read everything back (what a reader sees must stay);
//  3. retry, with its key, every request the kill cut off that the read found: the answer must
//     be "duplicate" at the offsets read, and acknowledges it. Nothing new is written yet, so
//     nothing has fsync'd the log since the restart except recovery itself;
//  4. the power goes: kill -9, then every file is cut back to what the journal says was
//     synced, and names no directory sync covered are removed;
//  5. restart and check: no acknowledged message lost (none answered "duplicate" that is not
//     readable where the answer said), nothing read before gone, none twice, every request
//     whole or absent; then retry the rest of the cut requests (new writes) and probe.
//
//	go test ./cmd/imago -run CrashRecoveryPowerLoss                   # 3 rounds
//	go test ./cmd/imago -run CrashRecoveryPowerLoss -crash.long -v    # 25 rounds

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/powerloss"
)

var crashPowerRounds = flag.Int("crash.powerloss.rounds", 3, "crash test, power-loss mode: rounds (-crash.long: 25)")

func TestCrashRecoveryPowerLoss(t *testing.T) {
	rounds := *crashPowerRounds
	if *crashLong {
		rounds = 25
	}
	seed := *crashSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("power-loss crash test: %d rounds, seed %d (rerun with -crash.seed %d)", rounds, seed, seed)
	rng := rand.New(rand.NewSource(seed))

	base := t.TempDir()
	dataDir := filepath.Join(base, "data")
	journal := filepath.Join(base, "sync.journal")
	env := []string{envSyncJournal + "=" + journal}
	srv := startServerEnv(t, dataDir, env)
	ctx := context.Background()
	if _, err := srv.client().CreateTopic(ctx, crashTopic, client.TopicConfig{Partitions: crashPartitions}); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	led := &ledger{durable: map[string]position{}}
	var totalAcked, totalDup int
	var totalLoss int64
	start := time.Now()
	for round := 1; round <= rounds; round++ {
		acked, cut := loadAndKill(t, srv, led, round, rng, true)
		var dups int
		var loss powerloss.Loss
		if round%2 == 0 {
			// Even rounds: the power goes with the kill, mid-load, while the flusher may be
			// waiting in fdatasync: whatever no fsync covered is gone at once.
			loss = powerLoss(t, journal, dataDir)
		} else {
			// Odd rounds: kill -9, restart on the page cache, retries answered "duplicate",
			// and only then the power goes.
			srv = startServerEnv(t, dataDir, env)
			verifyCrashState(t, srv.client(), led, round)
			dups, _ = retryCut(t, srv.client(), led, round, true)
			srv.kill() // and the power goes
			loss = powerLoss(t, journal, dataDir)
		}

		srv = startServerEnv(t, dataDir, env)
		n := verifyCrashState(t, srv.client(), led, round)
		if t.Failed() {
			t.Fatalf("round %d: state after kill -9, restart, retries and power loss is wrong (seed %d); log:\n%s",
				round, seed, tail(srv.logPath, 40))
		}
		if round%2 == 0 {
			dups, _ = retryCut(t, srv.client(), led, round, true)
		}
		_, retried := retryCut(t, srv.client(), led, round, false)
		probeWrite(t, srv.client(), led, round)
		totalAcked += acked + dups + retried
		totalDup += dups
		totalLoss += loss.Bytes
		t.Logf("round %d: %d acknowledged, %d cut by the kill: %d found after the restart and acknowledged as duplicates, "+
			"%d stored on retry after the power loss; power loss dropped %d bytes in %d files and names %v; %d messages verified",
			round, acked, cut, dups, retried, loss.Bytes, loss.Truncated, loss.Removed, n)
	}
	srv.stop()
	if totalAcked == 0 {
		t.Fatal("no request was ever acknowledged: the load did not run")
	}
	t.Logf("power-loss crash test: %d rounds in %v, %d acknowledged requests (%d through a duplicate answer), %d bytes dropped by power losses",
		rounds, time.Since(start).Round(time.Millisecond), totalAcked, totalDup, totalLoss)
}

// powerLoss cuts every file of dataDir back to what the sync journal says was fsync'd (and
// removes names no directory sync covered), then rebases the journal on what is left.
func powerLoss(t *testing.T, journal, dataDir string) powerloss.Loss {
	t.Helper()
	rec, err := powerloss.LoadJournal(journal)
	if err != nil {
		t.Fatal(err)
	}
	loss, err := rec.Drop(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.Baseline(dataDir); err != nil {
		t.Fatal(err)
	}
	if err := rec.Save(journal); err != nil {
		t.Fatal(err)
	}
	return loss
}

// retryCut sends again, with its Idempotency-Key, every request of the round that the kill cut
// off and that a read found stored (found) or did not find (!found), and records the answers
// as acknowledgements. A found request must be answered "duplicate" with the offsets it was
// read at; one not found must be stored anew. It returns how many were answered "duplicate"
// and how many were stored anew.
func retryCut(t *testing.T, c *client.Client, led *ledger, round int, found bool) (dups, stored int) {
	t.Helper()
	prefix := fmt.Sprintf("r%d-", round)
	led.mu.Lock()
	var cut []*sentReq
	for _, r := range led.reqs {
		if r.acked || r.key == "" || !strings.HasPrefix(r.id, prefix) {
			continue
		}
		if _, read := led.durable[r.msgs[0].id]; read == found {
			cut = append(cut, r)
		}
	}
	led.mu.Unlock()
	for _, r := range cut {
		msgs := r.clientMessages()
		rctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := c.Produce(rctx, crashTopic, msgs, client.ProduceOptions{IdempotencyKey: r.key})
		cancel()
		if err != nil {
			t.Errorf("round %d: retry of %s: %v", round, r.id, err)
			continue
		}
		if len(res.Offsets) != len(msgs) || res.Duplicate != found {
			t.Errorf("round %d: retry of %s (stored: %v): %d messages, answer %+v", round, r.id, found, len(msgs), res)
			continue
		}
		led.mu.Lock()
		if found {
			for i, m := range r.msgs {
				if p := led.durable[m.id]; p != (position{res.Offsets[i].Partition, res.Offsets[i].Offset}) {
					t.Errorf("round %d: retry of %s answered duplicate at %+v, message %s was read at %v", round, r.id, res.Offsets[i], m.id, p)
				}
			}
		}
		r.acked, r.offsets, r.duplicate = true, res.Offsets, res.Duplicate
		led.mu.Unlock()
		if found {
			dups++
		} else {
			stored++
		}
	}
	return dups, stored
}
