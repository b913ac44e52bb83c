package api

import (
	"os"
	"regexp"
	"sort"
	"strconv"
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

// TestErrorCodesDocumented: the error-code table of docs/http-api.md lists exactly the codes
// of Codes, each with its status.
func TestErrorCodesDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/http-api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "## Error codes")
	if !ok {
		t.Fatal("docs/http-api.md has no Error codes section")
	}
	row := regexp.MustCompile("(?m)^\\| (\\d{3}) \\| ([^|]+) \\|")
	code := regexp.MustCompile("`([a-z_]+)`")
	documented := map[string]int{}
	for _, m := range row.FindAllStringSubmatch(table, -1) {
		status, _ := strconv.Atoi(m[1])
		for _, c := range code.FindAllStringSubmatch(m[2], -1) {
			documented[c[1]] = status
		}
	}
	seen := map[string]bool{}
	for _, c := range Codes {
		if seen[c.Code] {
			t.Errorf("code %s is listed twice in Codes", c.Code)
		}
		seen[c.Code] = true
		if st, ok := documented[c.Code]; !ok || st != c.Status {
			t.Errorf("code %s (%d) is documented with status %d (documented: %v)", c.Code, c.Status, st, ok)
		}
		if got, ok := LookupCode(c.Code); !ok || got != c || Retryable(c.Code) != c.Retryable {
			t.Errorf("LookupCode(%s) = %+v, %v", c.Code, got, ok)
		}
	}
	for c := range documented {
		if !seen[c] {
			t.Errorf("docs/http-api.md documents %s, which Codes does not list", c)
		}
	}
	if Retryable("XAER_NOTA") || Retryable("") {
		t.Error("an unknown code is retryable")
	}
}
