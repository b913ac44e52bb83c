package api

import (
	"regexp"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
)

// TestSpecParses checks that the embedded spec is OpenAPI 3.0 YAML and that every local
// $ref points at a component that exists.
func TestSpecParses(t *testing.T) {
	var doc map[string]any
	if err := yaml.Unmarshal(Spec, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.0") {
		t.Fatalf("openapi version %q", v)
	}
	comps, _ := doc["components"].(map[string]any)
	for _, m := range regexp.MustCompile(`\$ref: "#/components/(\w+)/(\w+)"`).FindAllStringSubmatch(string(Spec), -1) {
		section, _ := comps[m[1]].(map[string]any)
		if _, ok := section[m[2]]; !ok {
			t.Errorf("$ref to missing component %s/%s", m[1], m[2])
		}
	}
}
