package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/replica"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeCluster is a test's view of a cluster member. It is not a raft node and replicates
// nothing: it answers the four questions the door asks (Status, Self, Leader, Serving) with
// what the test set, so that the door's forwarding can be tested on its own. The brokers and
// HTTP servers behind the doors are real.
type fakeCluster struct {
	mu        sync.Mutex
	self      replica.Peer
	leader    replica.Peer
	hasLeader bool
	serving   bool
	status    replica.Status
	refused   map[string]uint64
}

func (f *fakeCluster) Status() replica.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.status
	st.NodeID = f.self.ID
	if f.hasLeader {
		st.LeaderID = f.leader.ID
	}
	st.Serving = f.serving
	return st
}

func (f *fakeCluster) Self() replica.Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.self
}

func (f *fakeCluster) Leader() (replica.Peer, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader, f.hasLeader
}

func (f *fakeCluster) RefusedConnections() map[string]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.refused)
}

func (f *fakeCluster) Serving() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.serving
}

// set changes the view: the leader (nil: none known) and whether this node serves.
func (f *fakeCluster) set(leader *replica.Peer, serving bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hasLeader = leader != nil
	if leader != nil {
		f.leader = *leader
	}
	f.serving = serving
}

// seenRequest is what a member's HTTP server received.
type seenRequest struct {
	method, uri string
	header      http.Header
}

// member is one door of a test cluster: a real broker and gateway on a real HTTP server, the
// requests its server received, and the connections opened to it.
type member struct {
	*testServer
	fc    *fakeCluster
	mu    sync.Mutex
	seen  []seenRequest
	conns atomic.Int64
}

func (m *member) addr() string { return m.hs.Listener.Addr().String() }

func (m *member) peer() replica.Peer { return replica.Peer{ID: m.fc.self.ID, HTTPAddr: m.addr()} }

func (m *member) requests() []seenRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]seenRequest(nil), m.seen...)
}

// startMember serves a cluster member's door with node id id over a fresh broker.
func startMember(t testing.TB, id uint64, opts Options) *member {
	t.Helper()
	return startMemberTLS(t, id, opts, nil)
}

// startMemberTLS is startMember whose door serves HTTPS with serverTLS (nil: plain HTTP).
func startMemberTLS(t testing.TB, id uint64, opts Options, serverTLS *tls.Config) *member {
	t.Helper()
	m := &member{fc: &fakeCluster{self: replica.Peer{ID: id}}}
	dir := t.TempDir()
	ts := &testServer{t: t, dir: dir, reg: prometheus.NewRegistry(), opts: opts}
	metrics := NewMetrics(ts.reg)
	bo := broker.NewOptions(dir)
	bo.Logger = quietLogger()
	bo.Observer = metrics
	b, err := broker.Open(bo)
	if err != nil {
		t.Fatalf("open broker: %v", err)
	}
	ts.b = b
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	opts.Metrics = metrics
	opts.Cluster = m.fc
	s, err := New(b, opts)
	if err != nil {
		b.Close()
		t.Fatalf("new server: %v", err)
	}
	ts.s = s
	h := s.Handler()
	ts.hs = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.seen = append(m.seen, seenRequest{r.Method, r.RequestURI, r.Header.Clone()})
		m.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	ts.hs.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			m.conns.Add(1)
		}
	}
	if serverTLS != nil {
		ts.hs.TLS = serverTLS
		ts.hs.StartTLS()
	} else {
		ts.hs.Start()
	}
	m.testServer = ts
	m.fc.mu.Lock()
	m.fc.self.HTTPAddr = m.addr()
	m.fc.mu.Unlock()
	t.Cleanup(ts.stop)
	return m
}

// startPair starts a leader (node 1, serving) and a follower (node 2) that knows it.
func startPair(t testing.TB, leaderOpts, followerOpts Options) (leader, follower *member) {
	t.Helper()
	leader = startMember(t, 1, leaderOpts)
	lp := leader.peer()
	leader.fc.set(&lp, true)
	follower = startMember(t, 2, followerOpts)
	follower.fc.set(&lp, false)
	return leader, follower
}

var clusterTokens = []Token{{Name: "payments", Token: "s3cret-payments", Produce: []string{"*"}, Consume: []string{"*"}, Admin: true}}

const payToken = "Bearer s3cret-payments"

func leaderHeader(t *testing.T, r response, want string) {
	t.Helper()
	if got := r.header.Values(api.HeaderLeader); len(got) != 1 || got[0] != want {
		t.Errorf("%s: %q, want exactly [%s]", api.HeaderLeader, got, want)
	}
}

// A write sent to a follower is answered by the leader, with the leader's answer, carrying
// the token and the Idempotency-Key through and marked as forwarded.
func TestClusterForwardProxy(t *testing.T) {
	leader, follower := startPair(t, Options{Tokens: clusterTokens}, Options{Tokens: clusterTokens})
	follower.must(http.StatusCreated, http.MethodPut, "/v1/topics/serve.t", `{"partitions":1}`, "Authorization", payToken)
	if _, err := follower.b.Topic("serve.t"); !errors.Is(err, broker.ErrUnknownTopic) {
		t.Fatalf("the follower created the topic itself: %v", err)
	}

	r := follower.must(http.StatusOK, http.MethodPost, "/v1/topics/serve.t/messages", `{"messages":[{"value":"a"},{"value":"b"}]}`,
		"Authorization", payToken, "Idempotency-Key", "serve-k1")
	leaderHeader(t, r, "1")
	var pr api.ProduceResponse
	decodeJSON(t, r.body, &pr)
	if len(pr.Offsets) != 2 || pr.Offsets[1].Offset != 1 {
		t.Fatalf("offsets %+v", pr.Offsets)
	}
	if got := leader.fetch("serve.t", 0, "offset=0", "Authorization", payToken); len(got.Messages) != 2 {
		t.Fatalf("the leader holds %d messages, want 2", len(got.Messages))
	}
	// The retry with the same key gets the first outcome from the leader.
	r = follower.must(http.StatusOK, http.MethodPost, "/v1/topics/serve.t/messages", `{"messages":[{"value":"a"},{"value":"b"}]}`,
		"Authorization", payToken, "Idempotency-Key", "serve-k1")
	if !strings.Contains(string(r.body), `"duplicate":true`) {
		t.Fatalf("retry: %s", r.body)
	}

	seen := leader.requests()
	last := seen[len(seen)-1]
	if last.method != http.MethodPost || last.uri != "/v1/topics/serve.t/messages" ||
		last.header.Get(api.HeaderForwardedBy) != "2" || last.header.Get("Authorization") != payToken ||
		last.header.Get("Idempotency-Key") != "serve-k1" {
		t.Fatalf("the leader got %s %s with %v", last.method, last.uri, last.header)
	}

	// Reads are the leader's too, and the follower's own routes stay local.
	r = follower.must(http.StatusOK, http.MethodGet, "/v1/topics", "", "Authorization", payToken)
	leaderHeader(t, r, "1")
	if !strings.Contains(string(r.body), "serve.t") {
		t.Fatalf("topics through the follower: %s", r.body)
	}
	n := len(leader.requests())
	for _, path := range []string{"/healthz", "/metrics", "/openapi.yaml", "/v1/cluster"} {
		r := follower.do(http.MethodGet, path, "", "Authorization", payToken)
		if r.status != http.StatusOK {
			t.Errorf("GET %s on the follower: %d %s", path, r.status, r.body)
		}
		leaderHeader(t, r, "1")
	}
	// A request the follower refuses itself (no token) is not sent on, and says who leads.
	r = follower.do(http.MethodPost, "/v1/topics/serve.t/messages", `{"messages":[{"value":"c"}]}`)
	expectError(t, r, http.StatusUnauthorized, api.CodeUnauthorized, "")
	leaderHeader(t, r, "1")
	if got := len(leader.requests()); got != n {
		t.Fatalf("local routes reached the leader: %d requests, want %d", got, n)
	}
}

// With forward: redirect the follower answers 307 at the leader's URL, same path and query.
func TestClusterRedirect(t *testing.T) {
	leader, follower := startPair(t, Options{}, Options{Forward: ForwardRedirect})
	req, _ := http.NewRequest(http.MethodPost, follower.hs.URL+"/v1/topics/serve.t/messages?x=1&y=%2F", strings.NewReader(`{"messages":[{"value":1}]}`))
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("status %d, want 307", resp.StatusCode)
	}
	if want := "http://" + leader.addr() + "/v1/topics/serve.t/messages?x=1&y=%2F"; resp.Header.Get("Location") != want {
		t.Fatalf("Location %q, want %q", resp.Header.Get("Location"), want)
	}
	if resp.Header.Get(api.HeaderLeader) != "1" {
		t.Fatalf("Imago-Leader %q", resp.Header.Get(api.HeaderLeader))
	}
	if n := len(leader.requests()); n != 0 {
		t.Fatalf("the leader got %d requests", n)
	}
}

// No leader known, or a leader that does not serve yet: 503 no_leader with Retry-After, and
// /readyz says so.
func TestClusterNoLeader(t *testing.T) {
	var logs testenv.SyncBuffer
	m := startMember(t, 2, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	m.fc.set(nil, false)
	r := m.do(http.MethodPost, "/v1/topics/serve.t/messages", `{"messages":[{"value":1}]}`)
	expectError(t, r, http.StatusServiceUnavailable, api.CodeNoLeader, "")
	if r.header.Get("Retry-After") != "1" || r.header.Get(api.HeaderLeader) != "" {
		t.Fatalf("headers %v", r.header)
	}
	expectError(t, m.do(http.MethodGet, "/readyz", ""), http.StatusServiceUnavailable, api.CodeNoLeader, "")
	m.must(http.StatusOK, http.MethodGet, "/healthz", "")
	m.must(http.StatusOK, http.MethodGet, "/v1/cluster", "")

	self := m.peer()
	m.fc.set(&self, false) // elected, not serving yet
	r = m.do(http.MethodGet, "/v1/topics", "")
	expectError(t, r, http.StatusServiceUnavailable, api.CodeNoLeader, "")
	if r.header.Get("Retry-After") != "1" || r.header.Get(api.HeaderLeader) != "2" {
		t.Fatalf("headers %v", r.header)
	}
	m.must(http.StatusOK, http.MethodGet, "/readyz", "")

	m.fc.set(&self, true)
	m.must(http.StatusOK, http.MethodGet, "/v1/topics", "")
	// An election is routine: its answers are not logged as errors, one line per request.
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("no_leader answers logged as errors:\n%s", logs.String())
	}

	// A member that stopped on an error is not ready.
	m.fc.mu.Lock()
	m.fc.status.Error = "log verification failed"
	m.fc.mu.Unlock()
	r = m.do(http.MethodGet, "/readyz", "")
	expectError(t, r, http.StatusServiceUnavailable, api.CodeNotReady, "")
	if !strings.Contains(string(r.body), "log verification failed") {
		t.Fatalf("readyz: %s", r.body)
	}
}

// hangUp is a "leader" that reads each request and closes the connection without an answer.
func hangUp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(c)
			if req, err := http.ReadRequest(br); err == nil {
				io.Copy(io.Discard, req.Body)
			}
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// closedAddr is an address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A forward that got no answer: a write's outcome is unknown (the leader may have applied
// it), a read is no_leader; a leader that cannot even be dialled got nothing: no_leader.
func TestClusterLeaderDown(t *testing.T) {
	m := startMember(t, 2, Options{})
	post := func() response {
		return m.do(http.MethodPost, "/v1/topics/serve.t/messages", `{"messages":[{"value":1}]}`, "Idempotency-Key", "serve-k2")
	}
	m.fc.set(&replica.Peer{ID: 1, HTTPAddr: hangUp(t)}, false)
	r := post()
	expectError(t, r, http.StatusServiceUnavailable, api.CodeOutcomeUnknown, "")
	if r.header.Get("Retry-After") != "1" || r.header.Get(api.HeaderLeader) != "1" {
		t.Fatalf("headers %v", r.header)
	}
	if !strings.Contains(string(r.body), "same Idempotency-Key") {
		t.Fatalf("body %s", r.body)
	}
	r = m.do(http.MethodGet, "/v1/topics", "")
	expectError(t, r, http.StatusServiceUnavailable, api.CodeNoLeader, "")
	if r.header.Get("Retry-After") != "1" {
		t.Fatalf("headers %v", r.header)
	}

	m.fc.set(&replica.Peer{ID: 3, HTTPAddr: closedAddr(t)}, false)
	r = post()
	expectError(t, r, http.StatusServiceUnavailable, api.CodeNoLeader, "")
	if r.header.Get("Retry-After") != "1" || r.header.Get(api.HeaderLeader) != "3" || !strings.Contains(string(r.body), "nothing was sent") {
		t.Fatalf("dial refused: %v %s", r.header, r.body)
	}
}

// A request another node forwarded, reaching a node that does not serve, is not forwarded
// again (two nodes with stale views would otherwise bounce it between them).
func TestClusterForwardedOnce(t *testing.T) {
	leader, follower := startPair(t, Options{}, Options{})
	r := follower.do(http.MethodPost, "/v1/topics/serve.t/messages", `{"messages":[{"value":1}]}`, api.HeaderForwardedBy, "3")
	expectError(t, r, http.StatusServiceUnavailable, api.CodeNoLeader, "")
	if r.header.Get("Retry-After") != "1" || !strings.Contains(errorBody(t, r).Error.Message, `node "3" forwarded`) {
		t.Fatalf("%v %s", r.header, r.body)
	}
	if n := len(leader.requests()); n != 0 {
		t.Fatalf("forwarded again: the leader got %d requests", n)
	}
	// The serving leader answers a forwarded request.
	leader.createTopic("serve.t", 1)
	leader.must(http.StatusOK, http.MethodPost, "/v1/topics/serve.t/messages", `{"messages":[{"value":1}]}`, api.HeaderForwardedBy, "2")
}

// A fetch with allow_follower=true is answered from the follower's own log; without it, by
// the leader.
func TestClusterFollowerFetch(t *testing.T) {
	leader, follower := startPair(t, Options{}, Options{})
	if _, err := follower.b.CreateTopic("serve.local", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := follower.b.Produce(context.Background(), "serve.local", []broker.Message{{Value: []byte(`"v"`)}}, ""); err != nil {
		t.Fatal(err)
	}
	path := "/v1/topics/serve.local/partitions/0/messages?offset=0"
	r := follower.must(http.StatusOK, http.MethodGet, path+"&allow_follower=true", "")
	leaderHeader(t, r, "1")
	var fr api.FetchResponse
	decodeJSON(t, r.body, &fr)
	if len(fr.Messages) != 1 {
		t.Fatalf("local fetch: %s", r.body)
	}
	if n := len(leader.requests()); n != 0 {
		t.Fatalf("the leader got %d requests", n)
	}
	r = follower.do(http.MethodGet, path, "")
	expectError(t, r, http.StatusNotFound, api.CodeUnknownTopic, "") // the leader has no such topic
	leaderHeader(t, r, "1")
	r = follower.do(http.MethodGet, path+"&allow_follower=false", "")
	expectError(t, r, http.StatusNotFound, api.CodeUnknownTopic, "")
	expectError(t, follower.do(http.MethodGet, path+"&allow_follower=perhaps", ""), http.StatusBadRequest, api.CodeInvalidParameter, "allow_follower")
	if n := len(leader.requests()); n != 2 {
		t.Fatalf("the leader got %d requests, want 2", n)
	}
}

// GET /v1/cluster answers the node's own view with the fields of docs/http-api.md; a single
// node answers 404.
func TestClusterStatusEndpoint(t *testing.T) {
	leader, follower := startPair(t, Options{}, Options{})
	follower.fc.mu.Lock()
	follower.fc.status = replica.Status{ClusterID: "c0ffee", Role: "follower", Term: 7, CommitIndex: 42, AppliedIndex: 40,
		Nodes: []replica.NodeStatus{
			{ID: 1, HTTPAddr: leader.addr(), RaftAddr: "127.0.0.1:7081", Role: "leader", Reachable: true},
			{ID: 2, HTTPAddr: follower.addr(), RaftAddr: "127.0.0.1:7082", Role: "follower", Reachable: true},
		}}
	follower.fc.mu.Unlock()
	r := follower.must(http.StatusOK, http.MethodGet, "/v1/cluster", "")
	var got map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cluster_id", "node_id", "leader_id", "role", "term", "commit_index", "applied_index", "serving", "nodes"} {
		if _, ok := got[k]; !ok {
			t.Errorf("no %q in %s", k, r.body)
		}
	}
	var st api.ClusterStatus
	decodeJSON(t, r.body, &st)
	if st.ClusterID != "c0ffee" || st.NodeID != 2 || st.LeaderID != 1 || st.Term != 7 || st.CommitIndex != 42 ||
		st.AppliedIndex != 40 || st.Serving || len(st.Nodes) != 2 || st.Nodes[0].Role != "leader" {
		t.Fatalf("status %+v", st)
	}
	node := got["nodes"].([]any)[1].(map[string]any)
	for _, k := range []string{"id", "http_addr", "raft_addr", "role", "reachable", "match_index", "lag_entries"} {
		if _, ok := node[k]; !ok {
			t.Errorf("no %q in a node: %v", k, node)
		}
	}
	if n := len(leader.requests()); n != 0 {
		t.Fatalf("/v1/cluster was forwarded")
	}

	single := startServer(t, Options{})
	r = single.do(http.MethodGet, "/v1/cluster", "")
	expectError(t, r, http.StatusNotFound, api.CodeNotFound, "")
	if !strings.Contains(string(r.body), "not a cluster member") || r.header.Get(api.HeaderLeader) != "" {
		t.Fatalf("%v %s", r.header, r.body)
	}
}

// The broker's cluster errors: a lost leadership is no_leader with Retry-After, an operation
// a member cannot do yet is 501 naming it. A write whose leader lost leadership after
// proposing it is outcome_unknown: retry with the same key after Retry-After, not "after the
// server restarted" (no restart is coming; that is for a single node whose disk write failed).
func TestClusterBrokerErrors(t *testing.T) {
	m := startMember(t, 1, Options{})
	for _, tc := range []struct {
		err     error
		status  int
		code    string
		message string
		retry   bool
	}{
		{fmt.Errorf("produce: %w", broker.ErrNotLeader), http.StatusServiceUnavailable, api.CodeNoLeader, "leadership changed", true},
		{fmt.Errorf("xa start: %w", broker.ErrNotInCluster), http.StatusNotImplemented, api.CodeNotInCluster, "POST /v1/xa/start is not available on a cluster member", false},
		{fmt.Errorf("append: %w", broker.ErrOutcomeUnknown), http.StatusServiceUnavailable, api.CodeOutcomeUnknown, "same Idempotency-Key", true},
		{fmt.Errorf("%w: %v", broker.ErrOutcomeUnknown, "cluster: outcome unknown: leadership lost after proposing at index 9 term 2"),
			http.StatusServiceUnavailable, api.CodeOutcomeUnknown, "same Idempotency-Key, after Retry-After", true},
	} {
		w := httptest.NewRecorder()
		m.s.writeError(w, httptest.NewRequest(http.MethodPost, "/v1/xa/start", nil), tc.err)
		var e api.ErrorResponse
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
			t.Fatal(err)
		}
		if w.Code != tc.status || e.Error.Code != tc.code || !strings.Contains(e.Error.Message, tc.message) ||
			(w.Header().Get("Retry-After") == "1") != tc.retry {
			t.Errorf("%v: %d %v %s", tc.err, w.Code, w.Header(), w.Body)
		}
		if strings.Contains(e.Error.Message, "restart") {
			t.Errorf("%v: %q sends the client to wait for a restart", tc.err, e.Error.Message)
		}
	}
	// A single node whose write failed and whose cut could not be recorded: only a restart tells.
	err := fmt.Errorf("%w: %w", broker.ErrOutcomeUnknown, fmt.Errorf("%w: %w, restart required: fsync: input/output error", broker.ErrClosed, broker.ErrStorage))
	if ae := errorFor(err); ae.code != api.CodeOutcomeUnknown || !strings.Contains(ae.message, "after the server restarted") {
		t.Errorf("%v: %s %q, want outcome_unknown saying to retry after the server restarted", err, ae.code, ae.message)
	}
}

// The raft metrics read the member's status at scrape time; leader changes are counted.
func TestClusterMetrics(t *testing.T) {
	m := startMember(t, 1, Options{LeaderWatchInterval: time.Hour}) // the test's scrapes do the looking
	single := startServer(t, Options{})
	if body := string(single.must(http.StatusOK, http.MethodGet, "/metrics", "").body); strings.Contains(body, "imago_raft_") {
		t.Fatalf("a single node shows raft metrics")
	}
	scrape := func() string { return string(m.must(http.StatusOK, http.MethodGet, "/metrics", "").body) }
	expect := func(body string, lines ...string) {
		t.Helper()
		for _, l := range lines {
			if !strings.Contains(body, "\n"+l+"\n") {
				t.Errorf("no %q in the scrape", l)
			}
		}
	}
	self := m.peer()
	m.fc.set(&self, true)
	m.fc.mu.Lock()
	m.fc.status = replica.Status{Role: "leader", Term: 3, CommitIndex: 10, AppliedIndex: 9, Nodes: []replica.NodeStatus{
		{ID: 1, Role: "leader"}, {ID: 2, Role: "follower", LagEntries: 4}, {ID: 3, Role: "follower"}}}
	m.fc.refused = map[string]uint64{"tls": 50, "hello": 0}
	m.fc.mu.Unlock()
	expect(scrape(), "imago_raft_term 3", "imago_raft_commit_index 10", "imago_raft_applied_index 9",
		"imago_raft_is_leader 1", "imago_raft_has_leader 1", "imago_raft_leader_changes_total 1",
		`imago_raft_follower_lag_entries{node="2"} 4`, `imago_raft_follower_lag_entries{node="3"} 0`,
		`imago_raft_refused_connections_total{reason="tls"} 50`, `imago_raft_refused_connections_total{reason="hello"} 0`)

	m.fc.set(nil, false)
	body := scrape()
	expect(body, "imago_raft_is_leader 0", "imago_raft_has_leader 0", "imago_raft_leader_changes_total 1")
	if strings.Contains(body, "imago_raft_follower_lag_entries{") {
		t.Errorf("lag shown by a node that does not lead")
	}
	m.fc.set(&replica.Peer{ID: 3}, false)
	expect(scrape(), "imago_raft_leader_changes_total 2")
	m.fc.set(&self, true)
	m.fc.set(&self, true)
	expect(scrape(), "imago_raft_leader_changes_total 3")
	expect(scrape(), "imago_raft_leader_changes_total 3")
}

// 64 concurrent clients of a follower share kept-alive connections to the leader: the
// follower opens about as many connections as requests in flight, not one per request.
func TestClusterForwardConcurrent(t *testing.T) {
	leader, follower := startPair(t, Options{}, Options{})
	leader.createTopic("serve.t", 4)
	const clients, each = 64, 10
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				resp, err := hc.Post(follower.hs.URL+"/v1/topics/serve.t/messages", "application/json", strings.NewReader(`{"messages":[{"value":1}]}`))
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var total int64
	info, err := leader.b.Topic("serve.t")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range info.Partitions {
		total += p.EndOffset
	}
	if total != clients*each {
		t.Fatalf("the leader holds %d messages, want %d", total, clients*each)
	}
	// The test's own requests to the leader (createTopic, describe) add a connection or two,
	// and Go's transport may dial a few more than the peak in flight: a request that finds no
	// idle connection starts a dial, takes a connection freed meanwhile, and the dialled one
	// joins the idle pool (seen: 69 for 64 clients). Without keep-alive reuse (or with the
	// default 2 idle connections per host) it would be hundreds for these 640 requests.
	if n := leader.conns.Load(); n > clients+clients/4 {
		t.Fatalf("the follower opened %d connections to the leader for %d concurrent clients", n, clients)
	}
	t.Logf("%d forwarded requests over %d connections", clients*each, leader.conns.Load())
}

// BenchmarkClusterProduce measures what forwarding costs: 64 concurrent clients producing one
// small message per request (fsync always) straight to the leader, and through a follower
// that proxies to it.
//
//	go test ./gateway -run '^$' -bench ClusterProduce -benchtime 3s
func BenchmarkClusterProduce(b *testing.B) {
	leader, follower := startPair(b, Options{}, Options{})
	leader.createTopic("serve.bench", 12)
	for _, tc := range []struct {
		name string
		m    *member
	}{{"direct", leader}, {"forwarded", follower}} {
		b.Run(tc.name, func(b *testing.B) {
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer hc.CloseIdleConnections()
			url := tc.m.hs.URL + "/v1/topics/serve.bench/messages"
			b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := hc.Post(url, "application/json", strings.NewReader(`{"messages":[{"value":{"amount":100}}]}`))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}

// stuckLeader is a "leader" that reads each request, reports it on the returned channel and
// never answers (a paused process); it lets go of its connections when the test ends.
func stuckLeader(t *testing.T) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	release := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					got <- req.Method + " " + req.URL.Path
				}
				<-release
			}()
		}
	}()
	t.Cleanup(func() { close(release); ln.Close(); wg.Wait() })
	return ln.Addr().String(), got
}

// A forward to a leader that stops answering (paused, cut off) ends once this node learns of
// another leader: a write's outcome is unknown, a read is no_leader, and the answer names the
// new leader. Without this the client would wait until it gives up.
func TestClusterForwardEndsWhenLeaderChanges(t *testing.T) {
	m := startMember(t, 2, Options{LeaderWatchInterval: 5 * time.Millisecond})
	stuck, got := stuckLeader(t)
	for _, tc := range []struct {
		method, path, body, code string
	}{
		{http.MethodPost, "/v1/topics/serve.t/messages", `{"messages":[{"value":1}]}`, api.CodeOutcomeUnknown},
		{http.MethodGet, "/v1/topics", "", api.CodeNoLeader},
	} {
		m.fc.set(&replica.Peer{ID: 1, HTTPAddr: stuck}, false)
		answer := make(chan response, 1)
		go func() { // not m.do: it may not fail the test from this goroutine
			req, _ := http.NewRequest(tc.method, m.hs.URL+tc.path, strings.NewReader(tc.body))
			req.Header.Set("Idempotency-Key", "serve-k3")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				answer <- response{status: -1, body: []byte(err.Error())}
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			answer <- response{status: resp.StatusCode, header: resp.Header, body: b}
		}()
		select {
		case req := <-got:
			if req != tc.method+" "+tc.path {
				t.Fatalf("the leader got %s", req)
			}
		case r := <-answer:
			t.Fatalf("answered before the leader got the request: %d %s", r.status, r.body)
		}
		m.fc.set(&replica.Peer{ID: 3, HTTPAddr: closedAddr(t)}, false) // an election elsewhere
		var r response
		select {
		case r = <-answer:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s %s: no answer 10 s after the leader changed", tc.method, tc.path)
		}
		expectError(t, r, http.StatusServiceUnavailable, tc.code, "")
		if r.header.Get("Retry-After") != "1" || r.header.Get(api.HeaderLeader) != "3" {
			t.Fatalf("%s %s: headers %v", tc.method, tc.path, r.header)
		}
	}
}

// A member far behind the commit index it knows (catching up after a restart) is not ready;
// it is again once it has applied what it knows committed. The cluster view is a fake.
func TestClusterReadyzApplyLag(t *testing.T) {
	m := startMember(t, 2, Options{MaxApplyLag: 100})
	m.fc.set(&replica.Peer{ID: 1, HTTPAddr: "127.0.0.1:1"}, false)
	m.fc.mu.Lock()
	m.fc.status.CommitIndex, m.fc.status.AppliedIndex = 5000, 10
	m.fc.mu.Unlock()
	if r := m.do(http.MethodGet, "/readyz", ""); r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "behind") {
		t.Fatalf("readyz while 4990 entries behind: %d %s", r.status, r.body)
	}
	m.fc.mu.Lock()
	m.fc.status.AppliedIndex = 4950
	m.fc.mu.Unlock()
	if r := m.do(http.MethodGet, "/readyz", ""); r.status != http.StatusOK {
		t.Fatalf("readyz 50 entries behind, bound 100: %d %s", r.status, r.body)
	}
	// A member whose log is far behind knows a commit index near its own log's end: what a
	// leader announced is what counts.
	m.fc.mu.Lock()
	m.fc.status.LeaderCommitIndex = 9000
	m.fc.mu.Unlock()
	if r := m.do(http.MethodGet, "/readyz", ""); r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), "9000") {
		t.Fatalf("readyz 4050 entries behind the leader's commit index: %d %s", r.status, r.body)
	}
}
