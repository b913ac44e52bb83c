package gateway

import (
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/imagomq/imago/api"
)

// With no tokens configured the gateway trusts whoever reaches its loopback listener. A web
// browser on the same machine reaches it too, on behalf of any page it loads: a page of
// another site can send a POST that needs no preflight (a text/plain body is decoded as JSON
// all the same), and a page whose name an attacker re-points at 127.0.0.1 (DNS rebinding)
// can read the answers too. So, with auth off, a request is refused (403 forbidden) when
//   - its Host is not a loopback name (localhost, 127.0.0.0/8, ::1): a rebound name, or a
//     proxy that exposes the unauthenticated listener under another name;
//   - its Origin names another host and port than its Host (browsers send Origin on every
//     cross-origin request that can change anything);
//   - its Sec-Fetch-Site is cross-site or same-site (another port of the same host is
//     same-site, not same-origin).
//
// Clients that are not browsers send neither header and are not affected; the console is
// served from the same origin as the API. With tokens configured none of this applies: the
// bearer token is never ambient, so another site's page cannot send it.
func refuseCrossSite(r *http.Request) error {
	if !loopbackHost(r.Host) {
		return newError(http.StatusForbidden, api.CodeForbidden,
			"host %q is not a loopback name: with no auth configured the server answers only requests addressed to localhost, 127.0.0.1 or [::1]; configure auth tokens to serve other names", r.Host)
	}
	if r.Header.Get(api.HeaderForwardedBy) != "" {
		// A member forwarded it (proxy mode) after checking Origin and Sec-Fetch-Site against
		// the Host the client used; the proxy re-addressed it to this node, so they no longer
		// match here. A page cannot set this header on a cross-site request without a CORS
		// preflight, which the server never grants, and a rebound name fails the Host check.
		return nil
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return newError(http.StatusForbidden, api.CodeForbidden,
				"origin %q is not this server's (%s): with no auth configured, requests from other sites' pages are refused", o, r.Host)
		}
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "cross-site", "same-site":
		return newError(http.StatusForbidden, api.CodeForbidden,
			"a request from another site's page (Sec-Fetch-Site %s) is refused: with no auth configured only same-origin pages and non-browser clients are served", r.Header.Get("Sec-Fetch-Site"))
	}
	return nil
}

// loopbackHost reports whether host (a Host header: name or address, with or without a port)
// names this machine's loopback interface.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
