package api

import (
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// TestHTTPAPIDocMatchesSpec keeps docs/http-api.md (the contract in prose) and openapi.yaml
// (the same contract, machine-readable) in step: every operation of the spec is named in the
// document as `METHOD /path` with the spec's parameter names, and every `METHOD /path` the
// document names is an operation of the spec.
func TestHTTPAPIDocMatchesSpec(t *testing.T) {
	doc, err := os.ReadFile("../docs/http-api.md")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(Spec, &spec); err != nil {
		t.Fatalf("parse openapi.yaml: %v", err)
	}
	inSpec := map[string]bool{}
	for path, item := range spec.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "patch":
				inSpec[strings.ToUpper(method)+" "+path] = true
			}
		}
	}
	// An operation is named as `GET /v1/topics` or `GET /v1/topics?...` (query parameters
	// follow the path inside the same code span).
	named := map[string]bool{}
	for _, m := range regexp.MustCompile("`(GET|PUT|POST|DELETE|PATCH) (/[^`?\\s]*)").FindAllStringSubmatch(string(doc), -1) {
		named[m[1]+" "+m[2]] = true
	}
	for _, op := range sortedKeys(inSpec) {
		if !named[op] {
			t.Errorf("%s is in openapi.yaml but docs/http-api.md does not name it (as `%s`)", op, op)
		}
	}
	for _, op := range sortedKeys(named) {
		if !inSpec[op] {
			t.Errorf("docs/http-api.md names `%s`, which openapi.yaml does not have", op)
		}
	}
	if len(inSpec) < 10 {
		t.Errorf("read only %d operations from the spec", len(inSpec))
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
