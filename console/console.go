// Package console is Imago's operator console: a handful of static files (HTML, CSS and
// vanilla JavaScript modules, no framework, no build step) embedded in the binary and served
// by the gateway at / and /console/.
//
// The console is a client of the public HTTP API and of nothing else: every figure it shows
// comes from a documented endpoint (/v1/..., /healthz, /readyz, /metrics), and every value
// links to the call that produced it, so the console teaches the API. It keeps no state on the
// server. When the server requires a token, the page asks for one once and keeps it in the
// tab's session storage (gone when the tab closes); the token is sent as a bearer header and
// never put in a URL.
//
// Decisions:
//   - Files are served as they are stored (no templating): the same bytes at / and at
//     /console/, with absolute asset paths, and hash routes (#/topics/orders) so that a page
//     reload never asks the server for a path it does not know.
//   - Rates and the lag chart are sampled by the page (a few seconds apart) from counters the
//     API already exposes; the server keeps no history for the console.
//   - A Content-Security-Policy allows only the console's own files and calls to the same
//     origin: the console loads nothing from the network at run time.
package console

import (
	"embed"
	"io/fs"
	"net/http"
	"strings"
)

//go:embed static
var files embed.FS

// Prefix is the path the console's files are served under.
const Prefix = "/console/"

// csp allows the console's own scripts and styles and calls to the same origin only.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Static returns the console's files (index.html at the root).
func Static() fs.FS {
	sub, err := fs.Sub(files, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/
	}
	return sub
}

// Wrap returns a handler that serves the console for GET and HEAD requests of / and of paths
// under /console/, and passes every other request to api unchanged.
func Wrap(api http.Handler) http.Handler {
	static := Static()
	fileServer := http.StripPrefix(strings.TrimSuffix(Prefix, "/"), http.FileServerFS(static))
	index, err := fs.ReadFile(static, "index.html")
	if err != nil {
		panic(err)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		isGet := r.Method == http.MethodGet || r.Method == http.MethodHead
		if !isGet || (p != "/" && p != "/console" && !strings.HasPrefix(p, Prefix)) {
			api.ServeHTTP(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		if p == "/" || p == "/console" || p == Prefix || p == Prefix+"index.html" {
			h.Set("Content-Type", "text/html; charset=utf-8")
			if r.Method == http.MethodGet {
				w.Write(index)
			}
			return
		}
		fileServer.ServeHTTP(w, r)
	})
}
