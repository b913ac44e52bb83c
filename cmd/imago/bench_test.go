package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
)

func TestHistogramBuckets(t *testing.T) {
	for _, v := range []uint64{0, 1, 255, 256, 257, 511, 512, 1000, 1 << 20, 123456789, 1 << 40, 1<<63 - 1} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("index %d of %d out of range", i, v)
		}
		hi := histValue(i)
		if hi < v {
			t.Errorf("value %d: bucket %d upper edge %d is below it", v, i, hi)
		}
		if v > 0 && float64(hi-v)/float64(v) > 1.0/histSub {
			t.Errorf("value %d: bucket %d upper edge %d is more than 1/%d above", v, i, hi, histSub)
		}
		if i > 0 && histValue(i-1) >= v {
			t.Errorf("value %d: previous bucket's edge %d should be below it", v, histValue(i-1))
		}
	}
}

func TestHistogramQuantilesMatchSortedSamples(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	var h, a, b histogram
	samples := make([]time.Duration, 100000)
	for i := range samples {
		d := time.Duration(rng.ExpFloat64() * float64(2*time.Millisecond))
		samples[i] = d
		if i%2 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	h.merge(&a)
	h.merge(&b)
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	for _, q := range []float64{0.5, 0.99, 0.999} {
		want := samples[int(q*float64(len(samples)))-1]
		got := h.quantile(q)
		if diff := float64(got-want) / float64(want); diff < -0.01 || diff > 0.02 {
			t.Errorf("q%.3f: got %v want %v", q, got, want)
		}
	}
	if h.quantile(1) != samples[len(samples)-1] || h.max != samples[len(samples)-1] {
		t.Errorf("max: %v / %v want %v", h.quantile(1), h.max, samples[len(samples)-1])
	}
	var empty histogram
	if empty.quantile(0.5) != 0 {
		t.Error("empty histogram")
	}
}

// TestRawConn checks the lean client against net/http's server: Content-Length, chunked,
// keep-alive reuse, Connection: close, 204 and error statuses.
func TestRawConn(t *testing.T) {
	var mu sync.Mutex
	conns := map[string]bool{}
	connCount := func() int { mu.Lock(); defer mu.Unlock(); return len(conns) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/small":
			fmt.Fprintf(w, `{"got":%q,"auth":%q}`, body, r.Header.Get("Authorization"))
		case "/chunked":
			f := w.(http.Flusher)
			for i := 0; i < 5; i++ {
				w.Write([]byte(strings.Repeat("x", 10000)))
				f.Flush()
			}
			w.Write([]byte(`,"next_offset": 4242,"end_offset":5000}`))
		case "/close":
			w.Header().Set("Connection", "close")
			w.Write([]byte("bye"))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/busy":
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write([]byte(`{"error":{"code":"backpressure","message":"busy"}}`))
		}
	}))
	defer srv.Close()
	target, err := parseTarget(srv.URL, "tok")
	if err != nil {
		t.Fatal(err)
	}
	rc := newRawConn(target.dialAddr)
	defer rc.close()

	resp, err := rc.roundTrip(target.request("POST", "/small", []byte(`{"a":1}`)), true)
	if err != nil || resp.status != 200 || string(resp.body) != `{"got":"{\"a\":1}","auth":"Bearer tok"}` {
		t.Fatalf("small: %v %d %s", err, resp.status, resp.body)
	}
	resp, err = rc.roundTrip(target.request("GET", "/chunked", nil), true)
	if err != nil || resp.status != 200 || resp.bodyLen != 50000+int64(len(`,"next_offset": 4242,"end_offset":5000}`)) {
		t.Fatalf("chunked: %v %d len %d", err, resp.status, resp.bodyLen)
	}
	if n, ok := findNextOffset(resp.body); !ok || n != 4242 {
		t.Fatalf("next_offset: %d %v", n, ok)
	}
	resp, err = rc.roundTrip(target.request("GET", "/chunked", nil), false)
	if err != nil || resp.bodyLen != 50000+int64(len(`,"next_offset": 4242,"end_offset":5000}`)) || resp.body != nil {
		t.Fatalf("chunked discarded: %v %d %d", err, resp.status, resp.bodyLen)
	}
	resp, err = rc.roundTrip(target.request("GET", "/empty", nil), true)
	if err != nil || resp.status != 204 {
		t.Fatalf("empty: %v %d", err, resp.status)
	}
	resp, err = rc.roundTrip(target.request("GET", "/busy", nil), true)
	if err != nil || resp.status != 429 || resp.retryAfter != time.Second {
		t.Fatalf("busy: %v %+v", err, resp)
	}
	if connCount() != 1 {
		t.Fatalf("keep-alive: used %d connections, want 1", connCount())
	}
	resp, err = rc.roundTrip(target.request("GET", "/close", nil), true)
	if err != nil || string(resp.body) != "bye" || rc.c != nil {
		t.Fatalf("close: %v %s conn=%v", err, resp.body, rc.c)
	}
	if _, err = rc.roundTrip(target.request("POST", "/small", []byte(`{}`)), true); err != nil || connCount() != 2 {
		t.Fatalf("redial: %v conns=%d", err, connCount())
	}
}

func TestFindNextOffset(t *testing.T) {
	tests := []struct {
		body string
		want int64
		ok   bool
	}{
		{`{"messages":[],"next_offset":0,"end_offset":0}`, 0, true},
		{`{"messages":[{"value":"next_offset"}],"next_offset":  17 ,"end_offset":20}`, 17, true},
		{`{"next_offset"` + "\n:\t99}", 99, true},
		{`{"messages":[]}`, 0, false},
		{`{"next_offset":"x"}`, 0, false},
	}
	for _, tt := range tests {
		got, ok := findNextOffset([]byte(tt.body))
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: got %d %v", tt.body, got, ok)
		}
	}
}

func TestProduceBody(t *testing.T) {
	if got := string(produceBody(2, 6, 3)); got != `{"messages":[{"value":"bcde","partition":3},{"value":"bcde","partition":3}]}` {
		t.Fatalf("got %s", got)
	}
	if v := jsonStringValue(1024); len(v) != 1024 || v[0] != '"' || v[1023] != '"' {
		t.Fatal("value size")
	}
}

// bench offsets runs its three loads against a real database and reports them as JSON.
func TestBenchOffsets(t *testing.T) {
	for _, db := range []struct{ store, dsn string }{
		{"postgres", testenv.PostgresDSN(t)},
		{"mysql", testenv.MySQLDSN(t)},
	} {
		t.Run(db.store, func(t *testing.T) {
			var stdout, stderr strings.Builder
			args := []string{"bench", "offsets", "--store", db.store, "--dsn", db.dsn, "--committers", "8", "--duration", "300ms", "--cpu-duration", "400ms", "--json"}
			if code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			var rep benchOffsetsReport
			if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil {
				t.Fatalf("%v: %q", err, stdout.String())
			}
			if rep.Baseline.Commits == 0 || rep.GroupCommit.Commits == 0 || len(rep.Ceiling) != 4 || rep.Ceiling[3].Rows != 1 {
				t.Fatalf("report %+v", rep)
			}
			// On Linux the process's CPU per commit was read, that of group commit and that of the ceiling.
			if runtime.GOOS == "linux" && (rep.CPUPerCommitUs <= 0 || rep.CeilingCPUPerOffsetUs <= 0 ||
				rep.CPUAboveCeilingUs != rep.CPUPerCommitUs-rep.CeilingCPUPerOffsetUs) {
				t.Fatalf("cpu: %v µs/commit, ceiling %v µs/offset, above %v", rep.CPUPerCommitUs, rep.CeilingCPUPerOffsetUs, rep.CPUAboveCeilingUs)
			}
			// Group commit wrote its commits in fewer transactions; the baseline in one each.
			if rep.GroupCommit.Transactions >= uint64(rep.GroupCommit.Commits) || rep.Baseline.Transactions != uint64(rep.Baseline.Commits) {
				t.Fatalf("transactions: group commit %d for %d commits, baseline %d for %d",
					rep.GroupCommit.Transactions, rep.GroupCommit.Commits, rep.Baseline.Transactions, rep.Baseline.Commits)
			}
		})
	}
	var stderr strings.Builder
	if code := run(context.Background(), []string{"bench", "offsets", "--store", "oracle", "--dsn", "x"}, strings.NewReader(""), io.Discard, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "--store") {
		t.Fatalf("unknown store: exit %d, %s", code, stderr.String())
	}
}
