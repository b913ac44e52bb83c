package main

// TestCacheInvalidationExample runs the README's commands: imago serve with no configuration
// (the embedded default: no database), then the example, and checks what it prints: each of the
// three caches evicts each stale key once, and keeps the others.

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/examples/internal/exampletest"
)

func TestCacheInvalidationExample(t *testing.T) {
	imago := exampletest.Build(t, "./cmd/imago")
	example := exampletest.Build(t, "./examples/cache-invalidation")
	url := exampletest.Serve(t, imago, "")
	p := exampletest.Start(t, ".", nil, example, "-server", url, "-caches", "3")
	out := p.Wait(t, 60*time.Second)
	for _, c := range []string{"cache-a", "cache-b", "cache-c"} {
		for _, k := range []string{"price:sku-2", "price:sku-4"} {
			if n := strings.Count(out, fmt.Sprintf("%s: evicted %s ", c, k)); n != 1 {
				t.Errorf("%s evicted %s %d times, want 1", c, k, n)
			}
		}
	}
	if !strings.Contains(out, "cache-a: evicted price:sku-4 (cached 12900) because prices changed (offset 0); still cached: price:sku-1 price:sku-3") &&
		!strings.Contains(out, "cache-a: evicted price:sku-2 (cached 2450) because prices changed (offset 0); still cached: price:sku-1 price:sku-3") {
		t.Errorf("no line shows the other keys kept:\n%s", out)
	}
	if !strings.Contains(out, "published one invalidation of price:sku-2, price:sku-4 at offset 0") ||
		!strings.Contains(out, "all 3 caches evicted price:sku-2, price:sku-4") {
		t.Errorf("output is not what the README shows:\n%s", out)
	}
	t.Logf("the example printed:\n%s", out)

	// Again, as the README says: each instance starts after the offset it committed, so the
	// first invalidation is not handled twice and the new one is at offset 1.
	again := exampletest.Start(t, ".", nil, example, "-server", url, "-caches", "3").Wait(t, 60*time.Second)
	if !strings.Contains(again, "published one invalidation of price:sku-2, price:sku-4 at offset 1") ||
		strings.Count(again, ": evicted ") != 6 || strings.Count(again, "(offset 1)") != 6 {
		t.Errorf("second run:\n%s", again)
	}
}
