package gateway

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/prometheus/client_golang/prometheus"
)

// testServer is a real broker on a temporary directory behind a real HTTP server.
type testServer struct {
	t    testing.TB
	dir  string
	b    *broker.Broker
	s    *Server
	hs   *httptest.Server
	reg  *prometheus.Registry
	opts Options
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startServer opens a broker on a fresh directory and serves it; both stop with the test.
func startServer(t testing.TB, opts Options) *testServer {
	t.Helper()
	return startServerDir(t, t.TempDir(), opts)
}

func startServerDir(t testing.TB, dir string, opts Options) *testServer {
	t.Helper()
	return startServerTuned(t, dir, opts, nil)
}

// startServerTuned is startServerDir with the broker's options changed by tune (when not nil).
func startServerTuned(t testing.TB, dir string, opts Options, tune func(*broker.Options)) *testServer {
	t.Helper()
	ts := &testServer{t: t, dir: dir, reg: prometheus.NewRegistry(), opts: opts}
	m := NewMetrics(ts.reg)
	bo := broker.NewOptions(dir)
	bo.Logger = quietLogger()
	bo.Observer = m
	if tune != nil {
		tune(&bo)
	}
	b, err := broker.Open(bo)
	if err != nil {
		t.Fatalf("open broker: %v", err)
	}
	ts.b = b
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	opts.Metrics = m
	s, err := New(b, opts)
	if err != nil {
		b.Close()
		t.Fatalf("new server: %v", err)
	}
	ts.s = s
	ts.hs = httptest.NewServer(s.Handler())
	t.Cleanup(ts.stop)
	return ts
}

// stop closes the HTTP server, the gateway and the broker (safe to call twice).
func (ts *testServer) stop() {
	if ts.hs == nil {
		return
	}
	ts.s.Close()
	ts.hs.Close()
	if err := ts.b.Close(); err != nil {
		ts.t.Errorf("close broker: %v", err)
	}
	ts.hs = nil
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; hdr holds header name/value pairs.
func (ts *testServer) do(method, path, body string, hdr ...string) response {
	ts.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.hs.URL+path, rd)
	if err != nil {
		ts.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := ts.hs.Client().Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// must sends a request and fails the test unless the status is want.
func (ts *testServer) must(want int, method, path, body string, hdr ...string) response {
	ts.t.Helper()
	r := ts.do(method, path, body, hdr...)
	if r.status != want {
		ts.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, r.status, want, r.body)
	}
	return r
}

func (ts *testServer) createTopic(name string, partitions int, hdr ...string) {
	ts.t.Helper()
	body, _ := json.Marshal(api.TopicRequest{Partitions: partitions})
	r := ts.do(http.MethodPut, "/v1/topics/"+name, string(body), hdr...)
	if r.status != http.StatusCreated && r.status != http.StatusOK {
		ts.t.Fatalf("create topic %s: status %d: %s", name, r.status, r.body)
	}
}

func (ts *testServer) fetch(topic string, partition int, query string, hdr ...string) api.FetchResponse {
	ts.t.Helper()
	r := ts.must(http.StatusOK, http.MethodGet, "/v1/topics/"+topic+"/partitions/"+itoa(partition)+"/messages?"+query, "", hdr...)
	var out api.FetchResponse
	decodeJSON(ts.t, r.body, &out)
	return out
}

func (ts *testServer) produce(topic, body string, hdr ...string) api.ProduceResponse {
	ts.t.Helper()
	r := ts.must(http.StatusOK, http.MethodPost, "/v1/topics/"+topic+"/messages", body, hdr...)
	var out api.ProduceResponse
	decodeJSON(ts.t, r.body, &out)
	return out
}

func decodeJSON(t testing.TB, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
}

// errorBody decodes an error response, failing the test when it is not one.
func errorBody(t *testing.T, r response) api.ErrorResponse {
	t.Helper()
	var e api.ErrorResponse
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("status %d: not an error body: %s (%v)", r.status, r.body, err)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type %q", ct)
	}
	return e
}

// expectError fails the test unless r is an error answer with status and code and, when field
// is not empty, that error.field.
func expectError(t *testing.T, r response, status int, code, field string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	e := errorBody(t, r)
	if e.Error.Code != code {
		t.Errorf("code %q, want %q (%s)", e.Error.Code, code, e.Error.Message)
	}
	if field != "" && e.Error.Field != field {
		t.Errorf("field %q, want %q (%s)", e.Error.Field, field, e.Error.Message)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// inFlight reads imago_http_requests_in_flight.
func (ts *testServer) inFlight() float64 { return ts.gauge("imago_http_requests_in_flight") }

// gauge returns the value of an unlabelled gauge from the test registry.
func (ts *testServer) gauge(name string) float64 {
	ts.t.Helper()
	mfs, err := ts.reg.Gather()
	if err != nil {
		ts.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	ts.t.Fatalf("no gauge %s", name)
	return 0
}
