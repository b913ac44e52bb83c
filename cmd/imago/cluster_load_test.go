package main

// The load and the checkers of the three-process cluster tests (cluster_e2e_test.go).
//
// Producers send keyed requests of 1 to 3 messages, each to one partition, through a node picked
// at random, and retry a request without an answer (a cut connection, a timeout, 503
// outcome_unknown or no_leader, any 5xx) with the same Idempotency-Key and the same messages,
// through any node, until it is acknowledged. Every attempt is one operation of the history
// (internal/linearcheck): acknowledged, failed (no_leader: "nothing was applied", so the
// contract itself is checked) or unknown (open-ended). Fetchers read through random nodes, from
// the leader (forwarded; recorded for the linearizability check) or with allow_follower=true (not
// linearizable by design: checked afterwards against the final log at the same offsets).
//
// At the end every node is read whole with allow_follower=true and the checks are: the logs of
// the three nodes are identical (same messages at the same offsets); every acknowledged message
// is there at the offsets of its answer; no message is there twice; a request is there whole and
// contiguous, or not at all; per partition the requests of one producer are in the order it sent
// them; every message read during the run is at the same offset in the final log; and each
// partition's history of produces and leader fetches is linearizable (porcupine).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/internal/linearcheck"
)

// ceAttemptTimeout bounds one HTTP attempt; an election takes one to two seconds.
const ceAttemptTimeout = 2 * time.Second

// ceAnswer is what one HTTP attempt got.
type ceAnswer struct {
	status int    // 0: no answer (err is set)
	code   string // error.code of an error answer
	leader string // Imago-Leader
	body   []byte
	err    error
}

// definite reports whether the attempt certainly had no effect: answered with a 4xx other than
// 429 (refused) or 503 no_leader (the contract: nothing was applied).
func (a ceAnswer) definite() bool {
	return (a.status >= 400 && a.status < 500 && a.status != http.StatusTooManyRequests) ||
		(a.status == http.StatusServiceUnavailable && a.code == api.CodeNoLeader)
}

func (a ceAnswer) String() string {
	if a.err != nil {
		return a.err.Error()
	}
	return fmt.Sprintf("%d %s (leader %q)", a.status, a.code, a.leader)
}

// ceDo sends one request once (no replay of a body on another connection, see
// noReplayTransport) and reads the whole answer.
func ceDo(ctx context.Context, hc *http.Client, method, u string, body []byte, hdr map[string]string) ceAnswer {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return ceAnswer{err: err}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return ceAnswer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return ceAnswer{err: fmt.Errorf("read answer: %w", err)}
	}
	a := ceAnswer{status: resp.StatusCode, leader: resp.Header.Get(api.HeaderLeader), body: b}
	if resp.StatusCode >= 300 {
		var e api.ErrorResponse
		if json.Unmarshal(b, &e) == nil {
			a.code = e.Error.Code
		}
	}
	return a
}

// ceReq is one produce request: its key, its partition and its messages.
type ceReq struct {
	key       string
	worker    int
	seq       int
	partition int
	ids       []string
	body      []byte
	acked     bool
	offsets   []int64
	duplicate bool
}

// ceRead is a message read through a follower during the run.
type ceRead struct {
	partition int
	offset    int64
	id        string
	node      int
}

// ceRun is the load of one test on one topic and what it observed.
type ceRun struct {
	t     *testing.T
	c     *testCluster
	hc    *http.Client
	topic string
	parts int
	rec   *linearcheck.Recorder

	mu     sync.Mutex
	reqs   []*ceReq
	values map[string]string // message id -> the value's bytes as sent
	reads  []ceRead

	acked, unknown, noLeader, fetched atomic.Int64

	// trace lists every attempt with the node it went through and the answer, by time since
	// the recorder started (as the checker's reports show them); kept when a test fails.
	start time.Time
	trace []string

	stop context.CancelFunc
	wg   sync.WaitGroup
}

// newRun creates the topic (through node 1, forwarded to the leader) and returns an idle run.
func (c *testCluster) newRun(topic string, parts int) *ceRun {
	c.t.Helper()
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, DisableCompression: true}
	c.t.Cleanup(tr.CloseIdleConnections)
	r := &ceRun{t: c.t, c: c, hc: &http.Client{Transport: noReplayTransport{tr}}, topic: topic, parts: parts,
		rec: linearcheck.NewRecorder(), values: map[string]string{}, start: time.Now()}
	c.t.Cleanup(func() {
		if c.t.Failed() {
			c.keep("trace-"+topic+".txt", []byte(strings.Join(r.trace, "\n")+"\n"))
		}
	})
	body := []byte(fmt.Sprintf(`{"partitions": %d}`, parts))
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), ceAttemptTimeout)
		a := ceDo(ctx, r.hc, http.MethodPut, r.url(0, "/v1/topics/"+topic), body, nil)
		cancel()
		if a.status == http.StatusCreated || a.status == http.StatusOK {
			return r
		}
		if a.definite() && a.code != api.CodeNoLeader {
			c.t.Fatalf("create topic %s: %s %s", topic, a, a.body)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("create topic %s: %s", topic, a)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// url is node i's address through its client proxy.
func (r *ceRun) url(i int, path string) string {
	return "http://" + r.c.client[i].Addr() + path
}

// newReq makes the request seq of worker w: n messages to partition p.
func (r *ceRun) newReq(w, seq, p, n int, rng *rand.Rand) *ceReq {
	q := &ceReq{key: fmt.Sprintf("%s-w%d-%d", r.topic, w, seq), worker: w, seq: seq, partition: p}
	msgs := make([]api.ProduceMessage, n)
	r.mu.Lock()
	for i := range msgs {
		id := fmt.Sprintf("w%d-%d-%d", w, seq, i)
		v, _ := json.Marshal(map[string]any{"id": id, "pad": strings.Repeat("x", rng.Intn(100))})
		q.ids = append(q.ids, id)
		r.values[id] = string(v)
		msgs[i] = api.ProduceMessage{Value: v, Partition: &p}
	}
	r.reqs = append(r.reqs, q)
	r.mu.Unlock()
	q.body, _ = json.Marshal(api.ProduceRequest{Messages: msgs})
	return q
}

// attempt sends q once through node i and records the attempt. It reports whether q is now
// acknowledged.
func (r *ceRun) attempt(ctx context.Context, q *ceReq, i int) (bool, ceAnswer) {
	call := r.rec.Produce(q.worker, q.partition, q.key, q.ids)
	began := time.Since(r.start)
	actx, cancel := context.WithTimeout(ctx, ceAttemptTimeout)
	a := ceDo(actx, r.hc, http.MethodPost, r.url(i, "/v1/topics/"+r.topic+"/messages"), q.body,
		map[string]string{"Idempotency-Key": q.key})
	cancel()
	r.note("[%v, %v] client %d via node %d: produce key=%s p%d %v -> %s %s", began, time.Since(r.start), q.worker, i+1, q.key, q.partition, q.ids, a, bytes.TrimSpace(a.body))
	if a.status == http.StatusOK {
		var res api.ProduceResponse
		if err := json.Unmarshal(a.body, &res); err != nil || len(res.Offsets) != len(q.ids) {
			r.t.Errorf("produce %s through node %d: answer %s does not give %d offsets", q.key, i+1, a.body, len(q.ids))
			call.Unknown()
			return false, a
		}
		offsets := make([]int64, len(res.Offsets))
		for k, pos := range res.Offsets {
			if pos.Partition != q.partition {
				r.t.Errorf("produce %s: asked for partition %d, stored in %d", q.key, q.partition, pos.Partition)
			}
			offsets[k] = pos.Offset
		}
		call.Produced(offsets, res.Duplicate)
		r.mu.Lock()
		q.acked, q.offsets, q.duplicate = true, offsets, res.Duplicate
		r.mu.Unlock()
		r.acked.Add(1)
		return true, a
	}
	switch {
	case a.status == http.StatusServiceUnavailable && a.code == api.CodeNoLeader:
		call.Failed()
		r.noLeader.Add(1)
	case a.definite():
		call.Failed()
		r.t.Errorf("produce %s through node %d refused: %s %s", q.key, i+1, a, a.body)
	default:
		call.Unknown()
		r.unknown.Add(1)
	}
	return false, a
}

// send produces q until it is acknowledged or ctx ends, through node(attempt) for each attempt.
func (r *ceRun) send(ctx context.Context, q *ceReq, node func() int) bool {
	for ctx.Err() == nil {
		ok, a := r.attempt(ctx, q, node())
		if ok {
			return true
		}
		if a.definite() && a.code != api.CodeNoLeader {
			return false
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
	return false
}

func (r *ceRun) note(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	r.mu.Lock()
	r.trace = append(r.trace, line)
	r.mu.Unlock()
}

// startLoad starts producers and fetchers; stopLoad ends them.
func (r *ceRun) startLoad(producers, fetchers int, seed int64) {
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	for w := 0; w < producers; w++ {
		rng := rand.New(rand.NewSource(seed + int64(w)))
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				q := r.newReq(w, seq, rng.Intn(r.parts), 1+rng.Intn(3), rng)
				r.send(ctx, q, func() int { return rng.Intn(clusterSize) })
				sleepCtx(ctx, time.Duration(rng.Intn(5))*time.Millisecond)
			}
		}()
	}
	for f := 0; f < fetchers; f++ {
		rng := rand.New(rand.NewSource(seed + 1000 + int64(f)))
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.fetcher(ctx, 500+f, rng) }()
	}
}

func (r *ceRun) stopLoad() {
	if r.stop != nil {
		r.stop()
		r.wg.Wait()
		r.stop = nil
	}
}

// probe produces one new request through node i only, retrying until it is acknowledged, and
// returns when that was (the zero time if ctx ended first). worker must be used by one
// goroutine at a time.
func (r *ceRun) probe(ctx context.Context, worker, seq, i int, rng *rand.Rand) time.Time {
	q := r.newReq(worker, seq, rng.Intn(r.parts), 1, rng)
	if r.send(ctx, q, func() int { return i }) {
		return time.Now()
	}
	return time.Time{}
}

// fetcher reads partitions through random nodes until ctx ends.
func (r *ceRun) fetcher(ctx context.Context, client int, rng *rand.Rand) {
	next := make([]int64, r.parts)
	for ctx.Err() == nil {
		p, i := rng.Intn(r.parts), rng.Intn(clusterSize)
		off := next[p]
		if rng.Intn(4) == 0 {
			off = rng.Int63n(next[p] + 3)
		}
		max := 1 + rng.Intn(5)
		follower := rng.Intn(2) == 0
		var call *linearcheck.Call
		if !follower {
			call = r.rec.Fetch(client, p, off, max)
		}
		began := time.Since(r.start)
		actx, cancel := context.WithTimeout(ctx, ceAttemptTimeout)
		res, a := r.fetchOnce(actx, r.url(i, ""), p, off, max, follower)
		cancel()
		if res != nil {
			r.note("[%v, %v] client %d via node %d: fetch p%d @%d max=%d follower=%v -> %d messages end=%d (leader %q)", began, time.Since(r.start), client, i+1, p, off, max, follower, len(res.Messages), res.EndOffset, a.leader)
		} else {
			r.note("[%v, %v] client %d via node %d: fetch p%d @%d max=%d follower=%v -> %s", began, time.Since(r.start), client, i+1, p, off, max, follower, a)
		}
		switch {
		case res != nil:
			ids := r.identify(p, off, res)
			if call != nil {
				call.Fetched(ids, res.EndOffset)
			} else {
				r.mu.Lock()
				for k, id := range ids {
					r.reads = append(r.reads, ceRead{partition: p, offset: off + int64(k), id: id, node: i + 1})
				}
				r.mu.Unlock()
			}
			r.fetched.Add(1)
			if n := off + int64(len(ids)); n > next[p] {
				next[p] = n
			}
		case a.status == http.StatusRequestedRangeNotSatisfiable && call != nil:
			var e api.ErrorResponse
			if json.Unmarshal(a.body, &e) == nil && e.EndOffset != nil {
				call.OutOfRange(*e.EndOffset)
			} else {
				call.Unknown()
			}
		default:
			if call != nil {
				call.Unknown()
			}
			sleepCtx(ctx, 10*time.Millisecond)
		}
		sleepCtx(ctx, time.Duration(2+rng.Intn(6))*time.Millisecond)
	}
}

// fetchOnce fetches partition p from base (http://host:port) once.
func (r *ceRun) fetchOnce(ctx context.Context, base string, p int, off int64, max int, follower bool) (*api.FetchResponse, ceAnswer) {
	q := url.Values{"offset": {strconv.FormatInt(off, 10)}, "max_messages": {strconv.Itoa(max)}}
	if follower {
		q.Set("allow_follower", "true")
	}
	a := ceDo(ctx, r.hc, http.MethodGet, fmt.Sprintf("%s/v1/topics/%s/partitions/%d/messages?%s", base, r.topic, p, q.Encode()), nil, nil)
	if a.status != http.StatusOK {
		return nil, a
	}
	var res api.FetchResponse
	if err := json.Unmarshal(a.body, &res); err != nil {
		r.t.Errorf("fetch %d@%d: answer %q: %v", p, off, a.body, err)
		return nil, ceAnswer{err: err}
	}
	return &res, a
}

// identify returns the ids of fetched messages, checking each one's bytes, partition and offset.
func (r *ceRun) identify(p int, off int64, res *api.FetchResponse) []string {
	ids := make([]string, len(res.Messages))
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, m := range res.Messages {
		var v struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(m.Value, &v); err != nil || v.ID == "" {
			r.t.Errorf("partition %d offset %d: value %s is not one the test wrote", p, m.Offset, m.Value)
		}
		ids[k] = v.ID
		if sent, ok := r.values[v.ID]; !ok || sent != string(m.Value) {
			r.t.Errorf("partition %d offset %d: message %s reads back as %s, sent %q", p, m.Offset, v.ID, m.Value, sent)
		}
		if m.Partition != p || m.Offset != off+int64(k) {
			r.t.Errorf("fetch %d@%d: message %d says partition %d offset %d", p, off, k, m.Partition, m.Offset)
		}
	}
	if res.NextOffset != off+int64(len(res.Messages)) {
		r.t.Errorf("fetch %d@%d: %d messages and next_offset %d", p, off, len(res.Messages), res.NextOffset)
	}
	return ids
}

// readAll reads partition p whole from node i's real address (follower read, or through the
// leader when recorded), retrying failed calls for a while.
func (r *ceRun) readAll(i, p int, follower bool) []string {
	t := r.t
	t.Helper()
	base := "http://" + r.c.nodes[i].httpAddr
	var out []string
	deadline := time.Now().Add(30 * time.Second)
	for off := int64(0); ; {
		var call *linearcheck.Call
		if !follower {
			call = r.rec.Fetch(900, p, off, 500)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, a := r.fetchOnce(ctx, base, p, off, 500, follower)
		cancel()
		if res == nil {
			if call != nil {
				call.Unknown()
			}
			if time.Now().After(deadline) {
				t.Fatalf("read of partition %d through node %d at %d: %s", p, i+1, off, a)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		ids := r.identify(p, off, res)
		if call != nil {
			call.Fetched(ids, res.EndOffset)
		}
		out = append(out, ids...)
		off += int64(len(ids))
		if len(ids) == 0 || off >= res.EndOffset {
			return out
		}
	}
}

// finish stops the load, heals every link, waits for the cluster to converge and runs every
// check. It returns the number of operations porcupine checked.
func (r *ceRun) finish(seed int64) int {
	t := r.t
	t.Helper()
	r.stopLoad()
	r.c.heal()
	r.c.settle(60 * time.Second)
	if r.acked.Load() == 0 {
		t.Fatalf("%s: no produce was acknowledged: the load did not run", r.topic)
	}

	// The final logs: every node read whole as a follower; the leader's read is the
	// linearizability check's complete read. settle cannot see a write that a node still holds
	// before proposing it (its client gave up, the server goes on, and under the race detector
	// that can take longer than settle's quiet spell): when the cluster's indexes moved during
	// the reads, the reads are not final. Settle and read again, a few times at most.
	var (
		logs          [][][]string
		base          int
		before, after string
		diffs         []string
	)
	for round := 1; ; round++ {
		before = r.c.statusLine()
		logs, base, diffs = r.finalReads()
		after = r.c.statusLine()
		if before == after || round == 5 {
			break
		}
		t.Logf("the cluster moved during the final reads (round %d): %s\nthen: %s; settling and reading again", round, before, after)
		r.c.settle(60 * time.Second)
	}
	for _, d := range diffs {
		t.Error(d)
	}
	if r.checkLogs(logs, base) || len(diffs) > 0 {
		t.Logf("cluster before the final reads: %s\nand after: %s", before, after)
	}
	return r.checkLinear(seed)
}

// finalReads reads every partition whole from every running node as a follower, and from the
// first of them through the leader (recorded for the linearizability check). diffs names each
// partition whose two reads from that node disagree.
func (r *ceRun) finalReads() (logs [][][]string, base int, diffs []string) {
	t := r.t
	t.Helper()
	logs = make([][][]string, clusterSize)
	base = -1
	for i := range r.c.nodes {
		if r.c.gone[i] {
			continue
		}
		if base < 0 {
			base = i
		}
		logs[i] = make([][]string, r.parts)
		for p := 0; p < r.parts; p++ {
			logs[i][p] = r.readAll(i, p, true)
		}
	}
	for p := 0; p < r.parts; p++ {
		final := r.readAll(base, p, false)
		if !equalIDs(final, logs[base][p]) {
			diffs = append(diffs, fmt.Sprintf("partition %d: the leader's read has %d messages, node %d's own read %d", p, len(final), base+1, len(logs[base][p])))
		}
	}
	return logs, base, diffs
}

func equalIDs(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkLogs runs the checks of the final logs (see the file comment).
func (r *ceRun) checkLogs(logs [][][]string, base int) (differ bool) {
	t := r.t
	t.Helper()
	for i := range logs {
		if i == base || logs[i] == nil {
			continue
		}
		for p := 0; p < r.parts; p++ {
			if !equalIDs(logs[i][p], logs[base][p]) {
				n := min(len(logs[i][p]), len(logs[base][p]))
				at := n
				for k := 0; k < n; k++ {
					if logs[i][p][k] != logs[base][p][k] {
						at = k
						break
					}
				}
				t.Errorf("partition %d: node %d has %d messages, node %d has %d; they differ from offset %d: %v and %v", p, i+1, len(logs[i][p]), base+1, len(logs[base][p]), at,
					logs[i][p][at:min(at+5, len(logs[i][p]))], logs[base][p][at:min(at+5, len(logs[base][p]))])
				differ = true
			}
		}
	}
	type pos struct {
		p   int
		off int64
	}
	where := map[string]pos{}
	total := 0
	for p, ids := range logs[base] {
		for off, id := range ids {
			total++
			if prev, dup := where[id]; dup {
				t.Errorf("message %s is stored twice: partition %d offset %d and partition %d offset %d", id, prev.p, prev.off, p, off)
				continue
			}
			where[id] = pos{p, int64(off)}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var acked, lost, partial, stored int
	lastSeq := map[[2]int]int{} // worker, partition -> seq of its last request seen, by offset order
	byFirst := map[pos]*ceReq{}
	for _, q := range r.reqs {
		var present int
		for k, id := range q.ids {
			at, ok := where[id]
			if !ok {
				continue
			}
			present++
			first := where[q.ids[0]]
			if at.p != q.partition || at.off != first.off+int64(k) {
				t.Errorf("request %s: message %d is at partition %d offset %d, its first at partition %d offset %d (asked for partition %d)",
					q.key, k, at.p, at.off, first.p, first.off, q.partition)
			}
		}
		if present > 0 {
			stored++
			byFirst[where[q.ids[0]]] = q
		}
		if present > 0 && present < len(q.ids) {
			partial++
			t.Errorf("request %s: %d of its %d messages are stored", q.key, present, len(q.ids))
		}
		if !q.acked {
			continue
		}
		acked++
		if present == 0 {
			lost++
			t.Errorf("LOST: request %s was acknowledged at partition %d offsets %v (duplicate %v) and is on no node", q.key, q.partition, q.offsets, q.duplicate)
			continue
		}
		for k, id := range q.ids {
			if at := where[id]; at.p != q.partition || at.off != q.offsets[k] {
				t.Errorf("request %s: message %s acknowledged at partition %d offset %d, stored at partition %d offset %d", q.key, id, q.partition, q.offsets[k], at.p, at.off)
			}
		}
	}
	// Order: per partition, each producer's requests in the order it sent them.
	for p, ids := range logs[base] {
		for off := 0; off < len(ids); off++ {
			q, ok := byFirst[pos{p, int64(off)}]
			if !ok {
				if _, known := r.values[ids[off]]; !known {
					t.Errorf("partition %d offset %d: message %q was never sent", p, off, ids[off])
				}
				continue
			}
			k := [2]int{q.worker, p}
			if last, seen := lastSeq[k]; seen && q.seq <= last {
				t.Errorf("partition %d offset %d: request %s (seq %d) after seq %d of the same producer", p, off, q.key, q.seq, last)
			}
			lastSeq[k] = q.seq
		}
	}
	// What followers answered during the run is where the final log has it.
	for _, rd := range r.reads {
		ids := logs[base][rd.partition]
		if rd.offset >= int64(len(ids)) || ids[rd.offset] != rd.id {
			t.Errorf("node %d served %s at partition %d offset %d as a follower; the final log has it elsewhere", rd.node, rd.id, rd.partition, rd.offset)
		}
	}
	if lost > 0 || partial > 0 {
		t.Errorf("%s: %d of %d acknowledged requests lost, %d requests stored in part", r.topic, lost, acked, partial)
	}
	t.Logf("%s: %d requests sent, %d acknowledged, %d stored (%d messages on each node); %d attempts without answer, %d no_leader; %d fetches answered, %d follower reads checked",
		r.topic, len(r.reqs), acked, stored, total, r.unknown.Load(), r.noLeader.Load(), r.fetched.Load(), len(r.reads))
	return differ
}

// checkLinear checks each partition's history with porcupine.
func (r *ceRun) checkLinear(seed int64) int {
	t := r.t
	t.Helper()
	total := 0
	for _, p := range r.rec.Partitions() {
		ops := r.rec.History(p)
		// The final reads of finish cover every partition after all producers stopped.
		simple := collapseAttempts(linearcheck.Simplify(ops, true))
		res := linearcheck.Check(p, simple, time.Minute)
		res.Dropped = len(ops) - len(simple)
		total += res.Ops
		t.Logf("%s partition %d: %d operations (%d open-ended, %d settled attempts dropped) checked in %v: %s",
			r.topic, res.Partition, res.Ops, res.Open, res.Dropped, res.Took.Round(time.Millisecond), res.Verdict)
		switch res.Verdict {
		case porcupine.Illegal:
			path := filepath.Join(os.TempDir(), fmt.Sprintf("imago-cluster-%s-%d-p%d.html", r.topic, seed, res.Partition))
			if err := porcupine.VisualizePath(linearcheck.Model, res.Info, path); err != nil {
				path = "(visualization failed: " + err.Error() + ")"
			}
			t.Errorf("%s partition %d: history is NOT linearizable (seed %d, visualization %s)\n%s", r.topic, res.Partition, seed, path, res.Explain)
		case porcupine.Unknown:
			t.Errorf("%s partition %d: the checker could not decide within its time limit (%d operations)", r.topic, res.Partition, res.Ops)
		}
	}
	return total
}

// collapseAttempts keeps, of the attempts of one request that got no answer and that
// linearcheck.Simplify closed (another operation observed the request), only the earliest
// call, with the earliest return among them; it drops the others. During an outage a producer
// retries one request dozens of times, and porcupine would try every subset of those attempts
// (they all overlap) as the one that applied. Dropping them keeps the verdict: the one kept
// spans every point where any of them could have applied, and the others are no-ops wherever
// they fall after it (the key is stored by then).
func collapseAttempts(ops []porcupine.Operation) []porcupine.Operation {
	type group struct{ at, call, ret int64 }
	keep := map[string]*group{}
	closed := func(op porcupine.Operation) (string, bool) {
		in, ok := op.Input.(linearcheck.ProduceInput)
		if !ok || in.Key == "" || !op.Output.(linearcheck.ProduceOutput).Unknown || op.Return == math.MaxInt64 {
			return "", false
		}
		return in.Key, true
	}
	for i, op := range ops {
		key, ok := closed(op)
		if !ok {
			continue
		}
		g := keep[key]
		if g == nil {
			keep[key] = &group{at: int64(i), call: op.Call, ret: op.Return}
			continue
		}
		if op.Call < g.call {
			g.at, g.call = int64(i), op.Call
		}
		g.ret = min(g.ret, op.Return)
	}
	out := make([]porcupine.Operation, 0, len(ops))
	for i, op := range ops {
		if key, ok := closed(op); ok {
			g := keep[key]
			if g.at != int64(i) {
				continue
			}
			op.Return = g.ret
		}
		out = append(out, op)
	}
	return out
}
