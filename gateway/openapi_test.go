package gateway

import (
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/goccy/go-yaml"
	"github.com/imagomq/imago/api"
)

// TestOpenAPIMatchesRouter checks that every route in the router is in api/openapi.yaml and
// every operation in the spec is served.
func TestOpenAPIMatchesRouter(t *testing.T) {
	ts := startServer(t, Options{})
	served := map[string]bool{}
	err := chi.Walk(ts.s.router, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		served[strings.ToLower(method)+" "+route] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(api.Spec, &spec); err != nil {
		t.Fatalf("parse openapi.yaml: %v", err)
	}
	if !strings.HasPrefix(spec.OpenAPI, "3.0") {
		t.Errorf("openapi version %q, want 3.0.x", spec.OpenAPI)
	}
	documented := map[string]bool{}
	for path, item := range spec.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				documented[method+" "+path] = true
			}
		}
	}
	for _, k := range sorted(served) {
		if !documented[k] {
			t.Errorf("route %s is served but not in api/openapi.yaml", k)
		}
	}
	for _, k := range sorted(documented) {
		if !served[k] {
			t.Errorf("operation %s is in api/openapi.yaml but not served", k)
		}
	}
	if len(served) < 10 {
		t.Errorf("walked only %d routes", len(served))
	}
	// And the spec is what /openapi.yaml serves.
	r := ts.must(http.StatusOK, "GET", "/openapi.yaml", "")
	if string(r.body) != string(api.Spec) {
		t.Error("/openapi.yaml differs from api.Spec")
	}
}

func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
