package main

// Crash tests (docs/design.md, invariant 3): a real `imago serve` child
// process under concurrent produce load is killed with SIGKILL at random moments and restarted
// on the same data directory; after each restart the test reads every partition back and checks
// what the server promised.
//
//	go test ./cmd/imago -run Crash                     # 5 rounds (well under a minute)
//	go test ./cmd/imago -run Crash -crash.long -v      # 50 rounds
//	go test ./cmd/imago -run Crash -crash.seed 42      # replay the kill schedule of a failure

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math/rand"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

var (
	crashRounds = flag.Int("crash.rounds", 5, "crash test: SIGKILL/restart rounds")
	crashLong   = flag.Bool("crash.long", false, "crash test: 50 rounds")
	crashSeed   = flag.Int64("crash.seed", 0, "crash test: random seed (0 picks one and logs it)")
)

const (
	crashTopic      = "crash"
	crashPartitions = 4
	crashProducers  = 8
)

// sentMsg is one message as the test sent it.
type sentMsg struct {
	id        string
	key       *string
	value     json.RawMessage
	headers   map[string]string
	partition *int // nil: the server chose
}

// sentReq is one produce request and what became of it.
type sentReq struct {
	id   string
	msgs []sentMsg
	// acked: the server answered 200 with these positions. Otherwise the call was cut (by the
	// kill) and the request may or may not be stored, but all-or-nothing.
	acked   bool
	offsets []client.Position
	// key is the Idempotency-Key the request was sent with ("" for none); duplicate says the
	// acknowledgement was a "duplicate" answer to a retry after a restart.
	key       string
	duplicate bool
}

// clientMessages is the request as the client sends it (again, for a retry).
func (r *sentReq) clientMessages() []client.Message {
	msgs := make([]client.Message, len(r.msgs))
	for i, m := range r.msgs {
		msgs[i] = client.Message{Key: m.key, Value: m.value, Headers: m.headers, Partition: m.partition}
	}
	return msgs
}

type position struct {
	partition int
	offset    int64
}

// ledger is everything the producers sent, and what the test has seen stored.
type ledger struct {
	mu   sync.Mutex
	reqs []*sentReq
	// durable maps a message id to the position where it must stay: its acknowledged position,
	// or where a read found it (readers only see durable messages, so a crash cannot take back
	// what was once read).
	durable map[string]position
}

func (l *ledger) add(r *sentReq) {
	l.mu.Lock()
	l.reqs = append(l.reqs, r)
	l.mu.Unlock()
}

// stored is one message read back from the server.
type stored struct {
	pos position
	msg client.FetchedMessage
}

func TestCrashRecovery(t *testing.T) {
	rounds := *crashRounds
	if *crashLong {
		rounds = 50
	}
	seed := *crashSeed
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("crash test: %d rounds, seed %d (rerun with -crash.seed %d)", rounds, seed, seed)
	rng := rand.New(rand.NewSource(seed))

	dataDir := t.TempDir() + "/data"
	srv := startServer(t, dataDir)
	ctx := context.Background()
	if _, err := srv.client().CreateTopic(ctx, crashTopic, client.TopicConfig{Partitions: crashPartitions}); err != nil {
		t.Fatalf("create topic: %v", err)
	}
	led := &ledger{durable: map[string]position{}}
	var totalAcked, totalCut int
	start := time.Now()
	for round := 1; round <= rounds; round++ {
		acked, cut := loadAndKill(t, srv, led, round, rng, false)
		totalAcked += acked
		totalCut += cut
		srv = startServer(t, dataDir)
		n := verifyCrashState(t, srv.client(), led, round)
		if t.Failed() {
			t.Fatalf("round %d: state after restart is wrong (seed %d)", round, seed)
		}
		probeWrite(t, srv.client(), led, round)
		t.Logf("round %d: %d requests acknowledged, %d cut by the kill; %d messages verified after restart",
			round, acked, cut, n)
	}
	srv.stop()
	if totalAcked == 0 {
		t.Fatal("no request was ever acknowledged: the load did not run")
	}
	t.Logf("crash test: %d rounds in %v, %d acknowledged requests, %d cut", rounds, time.Since(start).Round(time.Millisecond), totalAcked, totalCut)
}

// loadAndKill runs the producers against srv, kills the server with SIGKILL after a random
// delay, and waits for the producers to stop. It returns the number of acknowledged requests
// and of requests whose outcome is unknown.
// With keyed, every request carries an Idempotency-Key (its id).
func loadAndKill(t *testing.T, srv *serverProc, led *ledger, round int, rng *rand.Rand, keyed bool) (acked, cut int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := srv.client()
	var nAcked, nCut atomic.Int64
	var wg sync.WaitGroup
	for p := 0; p < crashProducers; p++ {
		prng := rand.New(rand.NewSource(rng.Int63()))
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				req := newCrashRequest(prng, fmt.Sprintf("r%d-p%d-s%d", round, p, seq))
				if keyed {
					req.key = req.id
				}
				for i := range req.msgs {
					if prng.Intn(2) == 0 { // half the messages name their partition, so requests span partitions
						req.msgs[i].partition = client.Ptr(prng.Intn(crashPartitions))
					}
				}
				led.add(req)
				msgs := req.clientMessages()
				rctx, rcancel := context.WithTimeout(context.Background(), 20*time.Second)
				res, err := c.Produce(rctx, crashTopic, msgs, client.ProduceOptions{IdempotencyKey: req.key})
				rcancel()
				if err != nil {
					var e *client.Error
					if asError(err, &e) && e.Status >= 400 && e.Status < 500 && e.Status != 429 {
						t.Errorf("request %s refused: %v", req.id, err)
					}
					nCut.Add(1)
					if ctx.Err() == nil {
						time.Sleep(5 * time.Millisecond)
					}
					continue
				}
				if len(res.Offsets) != len(msgs) || res.Duplicate {
					t.Errorf("request %s: %d messages, answer %+v", req.id, len(msgs), res)
					continue
				}
				for i, pos := range res.Offsets {
					if msgs[i].Partition != nil && *msgs[i].Partition != pos.Partition {
						t.Errorf("request %s message %d: asked for partition %d, stored in %d", req.id, i, *msgs[i].Partition, pos.Partition)
					}
				}
				led.mu.Lock()
				req.acked, req.offsets = true, res.Offsets
				led.mu.Unlock()
				nAcked.Add(1)
			}
		}(p)
	}
	delay := 150*time.Millisecond + time.Duration(rng.Int63n(int64(1200*time.Millisecond)))
	time.Sleep(delay)
	srv.kill()
	cancel()
	wg.Wait()
	return int(nAcked.Load()), int(nCut.Load())
}

func asError(err error, target **client.Error) bool {
	e, ok := err.(*client.Error)
	if ok {
		*target = e
	}
	return ok
}

// newCrashRequest builds a request of 1 to 4 messages whose values identify request and index.
// Keys and headers vary so that all three are checked byte for byte.
func newCrashRequest(rng *rand.Rand, id string) *sentReq {
	r := &sentReq{id: id}
	n := 1 + rng.Intn(4)
	for i := 0; i < n; i++ {
		mid := id + "-i" + strconv.Itoa(i)
		pad := make([]byte, rng.Intn(200))
		for j := range pad {
			pad[j] = 'a' + byte(rng.Intn(26))
		}
		value, _ := json.Marshal(map[string]any{"id": mid, "n": rng.Intn(1000000), "pad": string(pad)})
		m := sentMsg{id: mid, value: value}
		if rng.Intn(3) > 0 {
			m.key = client.Ptr("key-" + strconv.Itoa(rng.Intn(50)))
		}
		if rng.Intn(2) == 0 {
			m.headers = map[string]string{"request": id, "index": strconv.Itoa(i)}
		}
		r.msgs = append(r.msgs, m)
	}
	return r
}

// readAll reads every partition of the topic from offset 0 to its end and checks that offsets
// are dense and that no message id appears twice. It returns the messages by id.
func readAll(t *testing.T, c *client.Client, topic string) map[string]stored {
	t.Helper()
	ctx := context.Background()
	desc, err := c.DescribeTopic(ctx, topic)
	if err != nil {
		t.Fatalf("describe %s: %v", topic, err)
	}
	byID := map[string]stored{}
	for _, p := range desc.Partitions {
		if p.StartOffset != 0 {
			t.Errorf("partition %d starts at %d, want 0 (nothing was deleted)", p.Partition, p.StartOffset)
		}
		next := int64(0)
		for next < p.EndOffset {
			res, err := c.Fetch(ctx, topic, p.Partition, client.FetchOptions{Offset: next, MaxMessages: 1000})
			if err != nil {
				t.Fatalf("fetch %s/%d at %d (end %d): %v", topic, p.Partition, next, p.EndOffset, err)
			}
			if len(res.Messages) == 0 {
				t.Fatalf("fetch %s/%d at %d returned nothing before the end %d (next_offset %d)", topic, p.Partition, next, p.EndOffset, res.NextOffset)
			}
			for _, m := range res.Messages {
				if m.Offset != next {
					t.Fatalf("partition %d: expected offset %d, got %d: offsets are not dense", p.Partition, next, m.Offset)
				}
				if m.Partition != p.Partition {
					t.Errorf("partition %d offset %d: message says partition %d", p.Partition, m.Offset, m.Partition)
				}
				var v struct {
					ID string `json:"id"`
				}
				if err := json.Unmarshal(m.Value, &v); err != nil || v.ID == "" {
					t.Fatalf("partition %d offset %d: value %s is not one the test wrote", p.Partition, m.Offset, m.Value)
				}
				if prev, dup := byID[v.ID]; dup {
					t.Errorf("message %s is stored twice: partition %d offset %d and partition %d offset %d",
						v.ID, prev.pos.partition, prev.pos.offset, p.Partition, m.Offset)
				}
				byID[v.ID] = stored{pos: position{p.Partition, m.Offset}, msg: m}
				next++
			}
			if res.NextOffset != next {
				t.Fatalf("partition %d: next_offset %d after reading up to %d", p.Partition, res.NextOffset, next)
			}
		}
	}
	return byID
}

// verifyCrashState checks the invariants after a restart and returns how many messages it read.
func verifyCrashState(t *testing.T, c *client.Client, led *ledger, round int) int {
	t.Helper()
	byID := readAll(t, c, crashTopic)
	led.mu.Lock()
	defer led.mu.Unlock()
	known := map[string]bool{}
	for _, r := range led.reqs {
		present := 0
		for i, m := range r.msgs {
			known[m.id] = true
			got, ok := byID[m.id]
			if !ok {
				if r.acked {
					t.Errorf("round %d: acknowledged message %s (partition %d offset %d) is lost",
						round, m.id, r.offsets[i].Partition, r.offsets[i].Offset)
				}
				if pos, was := led.durable[m.id]; was {
					t.Errorf("round %d: message %s was read at partition %d offset %d before, and is gone now",
						round, m.id, pos.partition, pos.offset)
				}
				continue
			}
			present++
			if r.acked {
				want := position{r.offsets[i].Partition, r.offsets[i].Offset}
				if got.pos != want {
					t.Errorf("round %d: message %s acknowledged at %v is at %v", round, m.id, want, got.pos)
				}
			}
			if pos, was := led.durable[m.id]; was && pos != got.pos {
				t.Errorf("round %d: message %s moved from %v to %v", round, m.id, pos, got.pos)
			}
			checkSame(t, round, m, got)
		}
		if present != 0 && present != len(r.msgs) {
			t.Errorf("round %d: request %s is half stored: %d of its %d messages (acked=%v)", round, r.id, present, len(r.msgs), r.acked)
		}
	}
	for id, s := range byID {
		if !known[id] {
			t.Errorf("round %d: partition %d offset %d holds %s, which no request sent", round, s.pos.partition, s.pos.offset, id)
		}
		led.durable[id] = s.pos
	}
	return len(byID)
}

// checkSame compares value, key and headers of a sent and a stored message, byte for byte.
func checkSame(t *testing.T, round int, m sentMsg, got stored) {
	t.Helper()
	if !bytes.Equal(got.msg.Value, m.value) {
		t.Errorf("round %d: message %s value\n got %s\nwant %s", round, m.id, got.msg.Value, m.value)
	}
	if (m.key == nil) != (got.msg.Key == nil) || (m.key != nil && *m.key != *got.msg.Key) {
		t.Errorf("round %d: message %s key: got %v want %v", round, m.id, strPtr(got.msg.Key), strPtr(m.key))
	}
	if len(m.headers) != len(got.msg.Headers) || (len(m.headers) > 0 && !maps.Equal(m.headers, got.msg.Headers)) {
		t.Errorf("round %d: message %s headers: got %v want %v", round, m.id, got.msg.Headers, m.headers)
	}
}

func strPtr(p *string) string {
	if p == nil {
		return "<none>"
	}
	return strconv.Quote(*p)
}

// probeWrite checks that the restarted server takes new writes and serves them, then records
// the probe so that later rounds check it too.
func probeWrite(t *testing.T, c *client.Client, led *ledger, round int) {
	t.Helper()
	ctx := context.Background()
	r := &sentReq{id: fmt.Sprintf("probe-r%d", round)}
	for p := 0; p < crashPartitions; p++ {
		id := fmt.Sprintf("%s-i%d", r.id, p)
		v, _ := json.Marshal(map[string]any{"id": id})
		r.msgs = append(r.msgs, sentMsg{id: id, value: v})
	}
	msgs := make([]client.Message, len(r.msgs))
	for i, m := range r.msgs {
		msgs[i] = client.Message{Value: m.value, Partition: client.Ptr(i)}
	}
	res, err := c.Produce(ctx, crashTopic, msgs, client.ProduceOptions{})
	if err != nil {
		t.Fatalf("round %d: new write after restart failed: %v", round, err)
	}
	for i, pos := range res.Offsets {
		page, err := c.Fetch(ctx, crashTopic, pos.Partition, client.FetchOptions{Offset: pos.Offset, MaxMessages: 1})
		if err != nil || len(page.Messages) != 1 || !bytes.Equal(page.Messages[0].Value, r.msgs[i].value) {
			t.Fatalf("round %d: new write at %+v does not read back: %v %+v", round, pos, err, page)
		}
	}
	r.acked, r.offsets = true, res.Offsets
	led.add(r)
}

// TestIdempotencyKeyAcrossRestart: a retried Idempotency-Key returns the first offsets with
// duplicate:true, also after SIGKILL and after a clean restart, and the topic holds one copy.
func TestIdempotencyKeyAcrossRestart(t *testing.T) {
	dataDir := t.TempDir() + "/data"
	srv := startServer(t, dataDir)
	ctx := context.Background()
	const topic = "idem"
	if _, err := srv.client().CreateTopic(ctx, topic, client.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	msgs := []client.Message{
		{Key: client.Ptr("acct-42"), Value: json.RawMessage(`{"id":"transfer-1","amount":100}`)},
		{Value: json.RawMessage(`{"id":"transfer-1-fee","amount":1}`), Partition: client.Ptr(1)},
	}
	opts := client.ProduceOptions{IdempotencyKey: "transfer-8812"}
	first, err := srv.client().Produce(ctx, topic, msgs, opts)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || len(first.Offsets) != 2 {
		t.Fatalf("first produce: %+v", first)
	}
	expectDuplicate := func(when string) {
		t.Helper()
		again, err := srv.client().Produce(ctx, topic, msgs, opts)
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if !again.Duplicate || fmt.Sprint(again.Offsets) != fmt.Sprint(first.Offsets) {
			t.Fatalf("%s: got %+v, want the first offsets %+v with duplicate:true", when, again, first.Offsets)
		}
	}
	expectDuplicate("retry")

	srv.kill()
	srv = startServer(t, dataDir)
	expectDuplicate("retry after SIGKILL and restart")

	srv.stop()
	srv = startServer(t, dataDir)
	expectDuplicate("retry after a clean restart")

	// The same key with another request is refused, not stored.
	other := []client.Message{{Value: json.RawMessage(`{"id":"something-else"}`)}}
	if _, err := srv.client().Produce(ctx, topic, other, opts); err == nil {
		t.Errorf("the same idempotency key with different messages was accepted")
	} else if e, ok := err.(*client.Error); !ok || e.Status < 400 || e.Status >= 500 {
		t.Errorf("the same idempotency key with different messages: want a 4xx, got %v", err)
	} else {
		t.Logf("key reused with other messages: %v", err)
	}

	byID := readAll(t, srv.client(), topic)
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	if fmt.Sprint(ids) != "[transfer-1 transfer-1-fee]" {
		t.Fatalf("topic holds %v, want one copy of each message", ids)
	}
	for i, id := range []string{"transfer-1", "transfer-1-fee"} {
		if got := byID[id].pos; got != (position{first.Offsets[i].Partition, first.Offsets[i].Offset}) {
			t.Errorf("%s at %v, acknowledged at %+v", id, got, first.Offsets[i])
		}
	}
	srv.stop()
}
