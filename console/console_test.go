package console

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestStaticBudget: the console stays small (a few hundred KB at most) and every module and
// stylesheet the page or a module names is embedded.
func TestStaticBudget(t *testing.T) {
	static := Static()
	total := 0
	refs := regexp.MustCompile(`(?:src|href)="/console/([^"]+)"|from '\./([^']+)'`)
	err := fs.WalkDir(static, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(static, path)
		if err != nil {
			return err
		}
		total += len(b)
		for _, m := range refs.FindAllStringSubmatch(string(b), -1) {
			name := m[1] + m[2]
			if _, err := fs.Stat(static, name); err != nil {
				t.Errorf("%s refers to %s, which is not embedded", path, name)
			}
		}
		text := strings.ReplaceAll(string(b), "http://www.w3.org/2000/svg", "") // a namespace name, not a URL to load
		if strings.Contains(text, "http://") || strings.Contains(text, "https://") {
			t.Errorf("%s names an external URL: the console loads nothing from the network", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if total > 300<<10 {
		t.Errorf("the console is %d bytes, over the 300 KiB budget", total)
	}
	t.Logf("console: %d bytes", total)
}

// TestWrap: the console answers GET and HEAD of / and /console/..., everything else reaches
// the API handler.
func TestWrap(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := Wrap(api)
	for _, c := range []struct {
		method, path string
		status       int
		body         string
	}{
		{"GET", "/", 200, "<title>Imago console</title>"},
		{"HEAD", "/", 200, ""},
		{"GET", "/console/", 200, "<title>Imago console</title>"},
		{"GET", "/console/style.css", 200, "prefers-color-scheme"},
		{"GET", "/console/missing.js", 404, ""},
		{"POST", "/", 418, ""},
		{"GET", "/v1/topics", 418, ""},
		{"GET", "/consoles", 418, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.status || !strings.Contains(rec.Body.String(), c.body) {
			t.Errorf("%s %s: %d %.80q, want %d with %q", c.method, c.path, rec.Code, rec.Body.String(), c.status, c.body)
		}
	}
}
