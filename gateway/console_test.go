package gateway

import (
	"net/http"
	"strings"
	"testing"

	"github.com/imagomq/imago/api"
)

// TestConsoleServed: the console's page at / and /console/, its modules under /console/,
// with a Content-Security-Policy; other methods and paths still reach the API.
func TestConsoleServed(t *testing.T) {
	ts := startServer(t, Options{Tokens: []Token{{Name: "ops", Token: "o-secret", Admin: true}}})
	for _, p := range []string{"/", "/console/", "/console"} {
		r := ts.must(http.StatusOK, "GET", p, "") // no token: the page itself is public, the data is not
		if !strings.Contains(string(r.body), `<script type="module" src="/console/app.js">`) {
			t.Errorf("GET %s: not the console page: %.200s", p, r.body)
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", p, csp)
		}
	}
	r := ts.must(http.StatusOK, "GET", "/console/app.js", "")
	if ct := r.header.Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("app.js Content-Type %q", ct)
	}
	if r := ts.do("GET", "/console/nope.js", ""); r.status != 404 {
		t.Errorf("unknown console file: %d", r.status)
	}
	// POST / is not the console: the API's JSON 405.
	if r := ts.do("POST", "/", "{}"); r.status != http.StatusMethodNotAllowed && r.status != http.StatusNotFound {
		t.Errorf("POST /: %d %s", r.status, r.body)
	} else if !strings.Contains(string(r.body), `"error"`) {
		t.Errorf("POST /: not a JSON error: %s", r.body)
	}
	if r := ts.do("GET", "/v1/topics", ""); r.status != 401 {
		t.Errorf("the API behind the console lost its auth: %d", r.status)
	}
}

func TestWhoAmI(t *testing.T) {
	open := startServer(t, Options{})
	var w api.WhoAmI
	decodeJSON(t, open.must(http.StatusOK, "GET", "/v1/whoami", "").body, &w)
	if w != (api.WhoAmI{Admin: true, Producer: true, Consumer: true}) {
		t.Errorf("without auth: %+v", w)
	}
	ts := startServer(t, Options{Tokens: []Token{
		{Name: "ops", Token: "o-secret", Admin: true},
		{Name: "reader", Token: "r-secret", Consume: []string{"*"}},
	}})
	if r := ts.do("GET", "/v1/whoami", ""); r.status != 401 {
		t.Errorf("without a token: %d", r.status)
	}
	for tok, want := range map[string]api.WhoAmI{
		"o-secret": {Auth: true, Name: "ops", Admin: true},
		"r-secret": {Auth: true, Name: "reader", Consumer: true},
	} {
		var got api.WhoAmI
		decodeJSON(t, ts.must(http.StatusOK, "GET", "/v1/whoami", "", "Authorization", "Bearer "+tok).body, &got)
		if got != want {
			t.Errorf("token %s: %+v, want %+v", want.Name, got, want)
		}
		if strings.Contains(string(ts.must(http.StatusOK, "GET", "/v1/whoami", "", "Authorization", "Bearer "+tok).body), tok) {
			t.Errorf("whoami shows the secret")
		}
	}
}
