package gateway

import (
	"net/http"
	"strings"
	"testing"
)

// With no auth configured, a page of another site (or a name rebound to 127.0.0.1) cannot
// produce, nor read: requests whose Host is not loopback, whose Origin is another host, or
// that a browser marks cross-site are 403 and store nothing; clients that are not browsers,
// and the console's same-origin requests, are served. With tokens configured the headers do
// not matter (a bearer token is never ambient).
func TestCrossSiteRefusedWithoutAuth(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("orders", 1)
	self := strings.TrimPrefix(ts.hs.URL, "http://")
	post := func(host string, hdr ...string) int {
		t.Helper()
		req, err := http.NewRequest("POST", ts.hs.URL+"/v1/topics/orders/messages", strings.NewReader(`{"messages":[{"value":1}]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/plain") // no preflight
		if host != "" {
			req.Host = host
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := ts.hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		name string
		host string
		hdr  []string
	}{
		{"rebound host", "evil.example:80", nil},
		{"host of a LAN address", "192.168.1.10:8080", nil},
		{"origin of another site", "", []string{"Origin", "https://evil.example"}},
		{"origin of another port", "", []string{"Origin", "http://127.0.0.1:1"}},
		{"opaque origin", "", []string{"Origin", "null"}},
		{"cross-site fetch", "", []string{"Sec-Fetch-Site", "cross-site"}},
		{"same-site fetch", "", []string{"Sec-Fetch-Site", "same-site"}},
	} {
		if got := post(c.host, c.hdr...); got != http.StatusForbidden {
			t.Errorf("%s: status %d, want 403", c.name, got)
		}
	}
	if end := ts.fetch("orders", 0, "offset=0").NextOffset; end != 0 {
		t.Fatalf("refused requests stored messages: next offset %d", end)
	}
	for _, c := range []struct {
		name string
		host string
		hdr  []string
	}{
		{"plain client", "", nil},
		{"localhost by name", "localhost:1", nil},
		{"IPv6 loopback", "[::1]:1", nil},
		{"same-origin page", "", []string{"Origin", "http://" + self, "Sec-Fetch-Site", "same-origin"}},
		{"address typed by the operator", "", []string{"Sec-Fetch-Site", "none"}},
	} {
		if got := post(c.host, c.hdr...); got != http.StatusOK {
			t.Errorf("%s: status %d, want 200", c.name, got)
		}
	}

	auth := authServer(t)
	auth.createTopic("settlement.eu", 1, bearer("admin-secret")...)
	r := auth.do("POST", "/v1/topics/settlement.eu/messages", `{"messages":[{"value":1}]}`,
		append(bearer("pay-secret"), "Origin", "https://partner.example", "Sec-Fetch-Site", "cross-site")...)
	if r.status != http.StatusOK {
		t.Errorf("with auth, a cross-site request with its token: status %d, want 200", r.status)
	}
}
