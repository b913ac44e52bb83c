package gateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/xa"
)

// fromClient sends requests from 127.0.0.2, another loopback address than the 127.0.0.1 the
// members dial each other from, each over a new connection, and remembers the address each
// one left from: the client address an audit record must name.
type fromClient struct {
	t    *testing.T
	hc   *http.Client
	mu   sync.Mutex
	last string
}

func newFromClient(t *testing.T) *fromClient {
	c := &fromClient{t: t}
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c.hc = &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := d.DialContext(ctx, network, addr)
			if err == nil {
				c.mu.Lock()
				c.last = conn.LocalAddr().String()
				c.mu.Unlock()
			}
			return conn, err
		},
	}}
	return c
}

// do sends a request to m and returns the status, the body and the address it left from.
func (c *fromClient) do(m *member, method, path, body string, hdr ...string) (int, string, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, m.hs.URL+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return resp.StatusCode, string(b), c.last
}

// An operator's resolve sent to a follower is forwarded to the leader, whose audit record
// must name the operator's address, not the follower's: the follower signs the client's
// address with the forward secret and the leader checks it. Headers a client makes up, sent
// to the leader or through the follower, name nobody but the client itself. The in-doubt
// transaction is inDoubtCoordinator's (global_test.go: a real database cannot be made to
// leave one on demand); the brokers, doors and the forwarding between them are real.
func TestClusterResolveAuditNamesClient(t *testing.T) {
	secret := []byte("the test cluster's forward secret")
	dir := t.TempDir()
	fake := &inDoubtCoordinator{Coordinator: openCoordinator(t, dir, xa.Broker("broker", openBroker(t, dir)))}
	var leaderLog testenv.SyncBuffer
	leader, follower := startPair(t,
		Options{Tokens: clusterTokens, ForwardSecret: secret, Coordinator: fake, Logger: slog.New(slog.NewTextHandler(&leaderLog, nil))},
		Options{Tokens: clusterTokens, ForwardSecret: secret})
	c := newFromClient(t)
	resolve := func(to *member, hdr ...string) string {
		t.Helper()
		fake.by = ""
		status, body, from := c.do(to, http.MethodPost, "/v1/global-transactions/hz-1/resolve", `{"decision": "rollback"}`,
			append([]string{"Authorization", payToken}, hdr...)...)
		if status != http.StatusOK {
			t.Fatalf("resolve: %d %s", status, body)
		}
		return from
	}

	// Through the follower: the record names the client and the member that forwarded it.
	from := resolve(follower)
	if want := "payments from " + from + " via node 2"; fake.by != want {
		t.Errorf("resolved through the follower: by %q, want %q", fake.by, want)
	}

	// Through the follower with made-up headers: the follower replaces them.
	from = resolve(follower, api.HeaderForwardedFor, "10.9.9.9:4242", api.HeaderForwardedSig, "00")
	if want := "payments from " + from + " via node 2"; fake.by != want {
		t.Errorf("resolved through the follower with a made-up client address: by %q, want %q", fake.by, want)
	}

	// Straight to the leader, posing as a forward by node 2: the leader cannot check the
	// signature, so it names the connection's address and says the claim is unverified.
	fakeSig := forwardSig([]byte("a guessed secret"), "2", "10.9.9.9:4242", http.MethodPost, "/v1/global-transactions/hz-1/resolve")
	from = resolve(leader, api.HeaderForwardedBy, "2", api.HeaderForwardedFor, "10.9.9.9:4242", api.HeaderForwardedSig, fakeSig)
	if want := "payments from " + from + " (forwarded; client address unverified)"; fake.by != want {
		t.Errorf("resolved at the leader with forged forward headers: by %q, want %q", fake.by, want)
	}

	// A heuristic decision on a branch prepared through the follower: the leader's log names
	// the client too.
	leader.createTopic("audit.t", 1, "Authorization", payToken)
	xid := `{"format_id": 7, "gtrid": "6175646974", "bqual": "01"}`
	for _, step := range []struct{ path, body string }{
		{"/v1/xa/start", `{"xid": ` + xid + `}`},
		{"/v1/xa/messages", `{"xid": ` + xid + `, "messages": [{"topic": "audit.t", "value": 1}]}`},
		{"/v1/xa/end", `{"xid": ` + xid + `, "flags": "success"}`},
		{"/v1/xa/prepare", `{"xid": ` + xid + `}`},
	} {
		follower.must(http.StatusOK, http.MethodPost, step.path, step.body, "Authorization", payToken)
	}
	status, body, from := c.do(follower, http.MethodPost, "/v1/xa/heuristic", `{"xid": `+xid+`, "decision": "rollback"}`,
		"Authorization", payToken)
	if status != http.StatusOK {
		t.Fatalf("heuristic decision: %d %s", status, body)
	}
	if want := `remote="` + from + ` via node 2"`; !strings.Contains(leaderLog.String(), want) {
		t.Errorf("the leader's log of the heuristic decision does not say %s:\n%s", want, leaderLog.String())
	}
}

// Without a forward secret a follower signs nothing: the leader names the follower's address
// and says it is not the client's.
func TestClusterResolveAuditUnsigned(t *testing.T) {
	dir := t.TempDir()
	fake := &inDoubtCoordinator{Coordinator: openCoordinator(t, dir, xa.Broker("broker", openBroker(t, dir)))}
	_, follower := startPair(t, Options{Tokens: clusterTokens, Coordinator: fake}, Options{Tokens: clusterTokens})
	c := newFromClient(t)
	status, body, from := c.do(follower, http.MethodPost, "/v1/global-transactions/hz-1/resolve", `{"decision": "commit"}`,
		"Authorization", payToken)
	if status != http.StatusOK {
		t.Fatalf("resolve: %d %s", status, body)
	}
	if !strings.HasPrefix(fake.by, "payments from 127.0.0.1:") || !strings.HasSuffix(fake.by, " (forwarded; client address unverified)") ||
		strings.Contains(fake.by, from) {
		t.Errorf("resolved through a follower without a secret: by %q, want the follower's 127.0.0.1 address marked unverified", fake.by)
	}
}
