package gateway

import (
	"crypto/tls"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
)

// Members whose doors serve HTTPS (http.tls): a follower forwards to the leader over TLS,
// trusting the members' CA and presenting its own certificate to a leader that requires one,
// and redirects to an https:// Location. A leader whose certificate the follower does not
// trust is never sent the request: 503 no_leader naming TLS, nothing applied.
func TestClusterForwardOverTLS(t *testing.T) {
	ca := testenv.NewCA(t, "members")
	lc, followerCert := ca.Issue(t, "leader", "127.0.0.1"), ca.Issue(t, "follower", "127.0.0.1")
	// The leader requires a client certificate of the members' CA, as http.tls.client_ca_file.
	leaderTLS := &tls.Config{Certificates: []tls.Certificate{lc}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert}
	start := func(t *testing.T, forward *tls.Config, mode string) (leader, follower *member) {
		leader = startMemberTLS(t, 1, Options{Tokens: clusterTokens}, leaderTLS)
		lp := leader.peer()
		leader.fc.set(&lp, true)
		follower = startMember(t, 2, Options{Tokens: clusterTokens, ForwardTLS: forward, Forward: mode})
		follower.fc.set(&lp, false)
		return leader, follower
	}

	// The member's certificate as serve gives it: renewable, asked for at each handshake.
	renewable := &tls.Config{RootCAs: ca.Pool(), GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		return &followerCert, nil
	}}
	t.Run("forward", func(t *testing.T) {
		leader, follower := start(t, renewable, "")
		follower.must(http.StatusCreated, http.MethodPut, "/v1/topics/tls.t", `{"partitions":1}`, "Authorization", payToken)
		r := follower.must(http.StatusOK, http.MethodPost, "/v1/topics/tls.t/messages", `{"messages":[{"value":"a"}]}`,
			"Authorization", payToken, "Idempotency-Key", "tls-k1")
		leaderHeader(t, r, "1")
		if _, err := leader.b.Topic("tls.t"); err != nil {
			t.Fatalf("the leader has no topic: %v", err)
		}
		if got := len(leader.requests()); got != 2 {
			t.Fatalf("the leader got %d requests over TLS, want 2", got)
		}
	})

	t.Run("redirect", func(t *testing.T) {
		leader, follower := start(t, ca.ClientConfig(followerCert), ForwardRedirect)
		req, _ := http.NewRequest(http.MethodGet, follower.hs.URL+"/v1/topics", nil)
		req.Header.Set("Authorization", payToken)
		hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := "https://" + leader.addr() + "/v1/topics"; resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != want {
			t.Fatalf("%d Location %q, want 307 %q", resp.StatusCode, resp.Header.Get("Location"), want)
		}
	})

	for _, tc := range []struct {
		name    string
		forward func(t *testing.T) *tls.Config
	}{
		// The follower trusts another CA: the leader's certificate fails verification.
		{"leader not trusted", func(t *testing.T) *tls.Config {
			other := testenv.NewCA(t, "other")
			return other.ClientConfig(other.Issue(t, "follower", "127.0.0.1"))
		}},
		// The follower has no certificate: it ends the handshake itself when the leader asks
		// for one (with TLS 1.3 the leader's refusal comes after the request is written).
		{"no client certificate", func(t *testing.T) *tls.Config { return ca.ClientConfig() }},
		// The follower's certificate is of a CA the leader does not accept: the same.
		{"client certificate of another CA", func(t *testing.T) *tls.Config {
			other := testenv.NewCA(t, "other")
			return ca.ClientConfig(other.Issue(t, "follower", "127.0.0.1"))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leader, follower := start(t, tc.forward(t), "")
			r := follower.do(http.MethodPost, "/v1/topics/tls.u/messages", `{"messages":[{"value":"a"}]}`, "Authorization", payToken, "Idempotency-Key", "tls-k2")
			expectError(t, r, http.StatusServiceUnavailable, api.CodeNoLeader, "")
			if !strings.Contains(string(r.body), "over TLS") || !strings.Contains(string(r.body), "nothing was sent") {
				t.Errorf("answer %s does not say nothing was sent", r.body)
			}
			if got := len(leader.requests()); got != 0 {
				t.Fatalf("the leader served %d requests", got)
			}
			if _, err := leader.b.Topic("tls.u"); !errors.Is(err, broker.ErrUnknownTopic) {
				t.Fatalf("the leader applied the request: %v", err)
			}
		})
	}
}
