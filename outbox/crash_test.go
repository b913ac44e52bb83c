package outbox_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/outbox"
)

var longCrash = flag.Bool("outbox.long", false, "run the outbox crash tests longer (more writes, more kills)")

// TestExactlyOnceUnderCrashes is acceptance test 1: concurrent writers insert outbox rows
// (one transaction in five rolls back, and some stay open for seconds before they end) while
// the relay, a separate process publishing over HTTP, is SIGKILLed several times and the
// broker process is SIGKILLed and restarted once. On MySQL/MariaDB a second source, with its
// own writers and relay process, polls the same server meanwhile (its gap checks read
// information_schema.innodb_trx too), and a monitoring agent reads that table in bursts. At the end every committed row is in the topic exactly
// once, no rolled-back row is, each key's messages are in commit order in one partition, and
// the outbox is empty: no row was deleted without being published.
func TestExactlyOnceUnderCrashes(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			testExactlyOnce(t, d)
		})
	}
}

// writers runs n writer goroutines on e until stop: transactions of 1 to 3 messages, one in
// five rolled back; with slow, every fourth transaction stays open 0.5 to 2.5 s.
func writers(ctx context.Context, e *dbEnv, topic string, n int, slow bool, l *ledger, stop *atomic.Bool, wg *sync.WaitGroup, werr *atomic.Value) {
	for w := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			seq := map[string]int{}
			for i := 0; !stop.Load(); i++ {
				key := fmt.Sprintf("%s-%s%d-k%d", e.source, map[bool]string{false: "w", true: "slow"}[slow], w, rng.IntN(3))
				n := 1 + rng.IntN(3)
				seqs := make([]int, n)
				for j := range seqs {
					seqs[j] = seq[key]
					seq[key]++
				}
				commit := rng.IntN(5) != 0
				var hold time.Duration
				if slow && i%4 == 0 {
					hold = 500*time.Millisecond + time.Duration(rng.IntN(2000))*time.Millisecond
				}
				if err := e.writeTxHold(ctx, topic, key, seqs, commit, hold); err != nil {
					werr.Store(err)
					return
				}
				l.add(key, seqs, commit)
			}
		}()
	}
}

func testExactlyOnce(t *testing.T, dialect string) {
	e := newDBEnv(t, dialect)
	dir := t.TempDir()
	bp := startBroker(t, dir, "127.0.0.1:0")
	c := client.New(bp.URL)
	topic := uniqueName(t, "t.")
	const partitions = 4
	ctx := context.Background()
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	relayLog := filepath.Join(dir, "relay.log")
	relay := e.startRelayProc(t, bp.URL, relayLog)

	writeFor, kills := 3*time.Second, 4
	if *longCrash {
		writeFor, kills = 20*time.Second, 15
	}
	l := newLedger()
	var stop atomic.Bool
	var wg sync.WaitGroup
	var werr atomic.Value
	writers(ctx, e, topic, 6, false, l, &stop, &wg, &werr)
	writers(ctx, e, topic, 2, true, l, &stop, &wg, &werr) // writers that stay open for seconds

	// MySQL/MariaDB: a second source on the same server, relayed by a process of its own.
	var e2 *dbEnv
	var l2 *ledger
	var topic2, relay2Log string
	var relay2 *proc
	if dialect == outbox.MySQL {
		e2, l2, topic2 = newDBEnv(t, dialect), newLedger(), uniqueName(t, "t2.")
		if _, err := c.CreateTopic(ctx, topic2, client.TopicConfig{Partitions: partitions}); err != nil {
			t.Fatal(err)
		}
		relay2Log = filepath.Join(dir, "relay2.log")
		relay2 = e2.startRelayProc(t, bp.URL, relay2Log)
		writers(ctx, e2, topic2, 2, true, l2, &stop, &wg, &werr)
		// And a monitoring agent that reads innodb_trx in bursts faster than its 100 ms
		// refresh (freezing it), with pauses in between.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				for i := 0; i < 50 && !stop.Load(); i++ {
					var n int
					_ = e2.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.innodb_trx`).Scan(&n)
					time.Sleep(20 * time.Millisecond)
				}
				time.Sleep(300 * time.Millisecond)
			}
		}()
	}

	// Chaos: kill the relay several times, the broker once (in the middle).
	interval := writeFor / time.Duration(kills+1)
	for k := range kills {
		time.Sleep(interval)
		relay.kill()
		if k == kills/2 {
			bp.kill()
			bp = startBroker(t, dir, bp.addr)
		}
		relay = e.startRelayProc(t, bp.URL, relayLog)
	}
	time.Sleep(interval)
	stop.Store(true)
	wg.Wait()
	if err := werr.Load(); err != nil {
		t.Fatal(err)
	}
	total := l.total()
	if total == 0 {
		t.Fatal("no row committed")
	}
	drained := func(e *dbEnv, p *proc, log string) func() bool {
		return func() bool {
			if !p.alive() {
				b, _ := os.ReadFile(log)
				t.Fatalf("relay exited:\n%s", tail(string(b), 30))
			}
			return e.rowsLeft(t) == 0
		}
	}
	waitFor(t, 90*time.Second, "the outbox to drain", drained(e, relay, relayLog))
	msgs := fetchAllHTTP(t, c, topic, partitions)
	l.check(t, msgs)
	if e2 != nil {
		waitFor(t, 90*time.Second, "the second outbox to drain", drained(e2, relay2, relay2Log))
		l2.check(t, fetchAllHTTP(t, c, topic2, partitions))
	}
	if t.Failed() {
		b, _ := os.ReadFile(relayLog)
		t.Logf("relay log, last lines:\n%s", tail(string(b), 40))
	}
	b, _ := os.ReadFile(relayLog)
	t.Logf("%d messages committed and published exactly once; relay started %d times, republished claims %d times",
		total, strings.Count(string(b), "----- start"), strings.Count(string(b), "republishing the batch"))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// relayPair is a broker, a topic of two partitions and two relay processes for one source,
// one of them holding the source's lock: the setting of the takeover tests.
type relayPair struct {
	e      *dbEnv
	c      *client.Client
	topic  string
	relays []*proc
	logs   []string
	l      *ledger
	seq    int
	t      *testing.T
}

func startRelayPair(t *testing.T, d string) *relayPair {
	t.Helper()
	e := newDBEnv(t, d)
	dir := t.TempDir()
	bp := startBroker(t, dir, "127.0.0.1:0")
	p := &relayPair{e: e, c: client.New(bp.URL), topic: uniqueName(t, "t."), l: newLedger(), t: t,
		logs: []string{filepath.Join(dir, "relay-a.log"), filepath.Join(dir, "relay-b.log")}}
	if _, err := p.c.CreateTopic(context.Background(), p.topic, client.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	p.relays = []*proc{e.startRelayProc(t, bp.URL, p.logs[0]), e.startRelayProc(t, bp.URL, p.logs[1])}
	waitFor(t, 20*time.Second, "one relay active", func() bool { return p.isActive(0) || p.isActive(1) })
	return p
}

// isActive reports whether relay i has logged that it holds the lock.
func (p *relayPair) isActive(i int) bool {
	b, _ := os.ReadFile(p.logs[i])
	return strings.Contains(string(b), "outbox relay active")
}

// active is the index of a relay that holds the lock.
func (p *relayPair) active() int {
	if p.isActive(1) {
		return 1
	}
	return 0
}

// write commits n outbox rows, one per transaction, over five keys, and records them.
func (p *relayPair) write(n int) {
	for range n {
		key := fmt.Sprintf("k%d", p.seq%5)
		if err := p.e.writeTx(context.Background(), p.topic, key, []int{p.seq}, true); err != nil {
			p.t.Fatal(err)
		}
		p.l.add(key, []int{p.seq}, true)
		p.seq++
	}
}

// TestTakeover is acceptance test 3: two relay processes for one source; only one holds the
// lock and publishes; SIGKILL it and the other takes over with no loss and no duplicate.
func TestTakeover(t *testing.T) {
	for _, d := range dialects {
		t.Run(d, func(t *testing.T) {
			t.Parallel()
			p := startRelayPair(t, d)
			e, relays, isActive, write := p.e, p.relays, p.isActive, p.write
			write(200)
			active := p.active()
			standby := 1 - active
			// The standby retries the lock every 50ms; while the active one lives it never gets it.
			time.Sleep(300 * time.Millisecond)
			if isActive(standby) {
				t.Fatal("both relays report holding the lock")
			}
			relays[active].kill()
			write(200)
			waitFor(t, 20*time.Second, "the standby to take over", func() bool { return isActive(standby) })
			waitFor(t, 60*time.Second, "the outbox to drain", func() bool { return e.rowsLeft(t) == 0 })
			p.l.check(t, fetchAllHTTP(t, p.c, p.topic, 2))
		})
	}
}
