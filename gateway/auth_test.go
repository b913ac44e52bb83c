package gateway

import (
	"net/http"
	"strings"
	"testing"
)

func authServer(t *testing.T) *testServer {
	return startServer(t, Options{Tokens: []Token{
		{Name: "admin", Token: "admin-secret", Admin: true},
		{Name: "payments", Token: "pay-secret", Produce: []string{"settlement.*"}},
		{Name: "ledger", Token: "ledger-secret", Consume: []string{"settlement.*"}},
	}})
}

func bearer(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

// TestAuth401401403 checks no token, a wrong token and a token without the right
// (issue 2, acceptance 6).
func TestAuth401401403(t *testing.T) {
	ts := authServer(t)
	ts.createTopic("settlement.eu", 1, bearer("admin-secret")...)
	const path = "/v1/topics/settlement.eu/messages"
	const body = `{"messages":[{"value":1}]}`
	for _, c := range []struct {
		name   string
		hdr    []string
		status int
		code   string
	}{
		{"no token", nil, 401, "unauthorized"},
		{"wrong token", bearer("pay-secreT"), 401, "unauthorized"},
		{"not bearer", []string{"Authorization", "Basic cGF5LXNlY3JldA=="}, 401, "unauthorized"},
		{"token without the right", bearer("ledger-secret"), 403, "forbidden"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do("POST", path, body, c.hdr...)
			if r.status != c.status || errorBody(t, r).Error.Code != c.code {
				t.Fatalf("status %d body %s; want %d %s", r.status, r.body, c.status, c.code)
			}
			if c.status == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
			if strings.Contains(string(r.body), "secret") {
				t.Errorf("error body leaks a token: %s", r.body)
			}
		})
	}
	if got := ts.fetch("settlement.eu", 0, "offset=0", bearer("ledger-secret")...); len(got.Messages) != 0 {
		t.Fatalf("rejected produces stored messages: %+v", got)
	}
}

// TestAuthRights checks the right each route needs (see routes.go).
func TestAuthRights(t *testing.T) {
	ts := authServer(t)
	admin, pay, ledger := bearer("admin-secret"), bearer("pay-secret"), bearer("ledger-secret")
	ts.createTopic("settlement.eu", 1, admin...)
	ts.createTopic("other", 1, admin...)
	cases := []struct {
		method, path, body string
		hdr                []string
		status             int
	}{
		// produce: a produce pattern matching the topic
		{"POST", "/v1/topics/settlement.eu/messages", `{"messages":[{"value":1}]}`, pay, 200},
		{"POST", "/v1/topics/other/messages", `{"messages":[{"value":1}]}`, pay, 403},
		{"POST", "/v1/topics/settlement.eu/messages", `{"messages":[{"value":1}]}`, admin, 403},
		// fetch: a consume pattern
		{"GET", "/v1/topics/settlement.eu/partitions/0/messages?offset=0", "", ledger, 200},
		{"GET", "/v1/topics/settlement.eu/partitions/0/messages?offset=0", "", pay, 403},
		{"GET", "/v1/topics/other/partitions/0/messages?offset=0", "", ledger, 403},
		// describe: produce, consume or admin
		{"GET", "/v1/topics/settlement.eu", "", pay, 200},
		{"GET", "/v1/topics/settlement.eu", "", ledger, 200},
		{"GET", "/v1/topics/other", "", admin, 200},
		{"GET", "/v1/topics/other", "", pay, 403},
		// create: admin
		{"PUT", "/v1/topics/settlement.us", `{"partitions":1}`, pay, 403},
		{"PUT", "/v1/topics/settlement.us", `{"partitions":1}`, admin, 201},
		// list and stats: any valid token
		{"GET", "/v1/topics", "", ledger, 200},
		{"GET", "/v1/stats", "", pay, 200},
		{"GET", "/v1/topics", "", nil, 401},
		{"GET", "/v1/stats", "", nil, 401},
		// open
		{"GET", "/healthz", "", nil, 200},
		{"GET", "/readyz", "", nil, 200},
		{"GET", "/metrics", "", nil, 200},
		{"GET", "/openapi.yaml", "", nil, 200},
	}
	for _, c := range cases {
		r := ts.do(c.method, c.path, c.body, c.hdr...)
		if r.status != c.status {
			t.Errorf("%s %s with %v: status %d, want %d: %s", c.method, c.path, c.hdr, r.status, c.status, r.body)
		}
	}
}

func TestAuthConfigErrors(t *testing.T) {
	for _, toks := range [][]Token{
		{{Name: "a", Token: ""}},
		{{Name: "a", Token: "x"}, {Name: "a", Token: "y"}},
		{{Name: "a", Token: "x"}, {Name: "b", Token: "x"}},
		{{Name: "a", Token: "x", Produce: []string{"["}}},
	} {
		if _, err := newAuthenticator(toks); err == nil {
			t.Errorf("tokens %+v: no error", toks)
		} else if strings.Contains(err.Error(), "x") && strings.Contains(err.Error(), `"x"`) {
			t.Errorf("error leaks a token: %v", err)
		}
	}
}

// TestAuthOff checks that without tokens no header is needed.
func TestAuthOff(t *testing.T) {
	ts := startServer(t, Options{})
	ts.must(http.StatusCreated, "PUT", "/v1/topics/x", `{"partitions":1}`)
	ts.must(http.StatusOK, "GET", "/v1/topics", "", "Authorization", "Bearer anything")
}
