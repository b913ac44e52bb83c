package outbox

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeHeaders: the headers column decoder never panics, and whatever it accepts
// re-encodes to JSON that decodes to the same headers.
func FuzzDecodeHeaders(f *testing.F) {
	for _, s := range []string{``, `null`, `{}`, `{"a":"b"}`, `{"a":1}`, `[]`, `{"a":"\u00e9"}`, `{`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := decodeHeaders(s)
		if err != nil {
			return
		}
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("re-encode %v: %v", h, err)
		}
		h2, err := decodeHeaders(string(b))
		if err != nil || len(h2) != len(h) {
			t.Fatalf("round trip %q -> %s -> %v, %v", s, b, h2, err)
		}
		for k, v := range h {
			if h2[k] != v {
				t.Fatalf("round trip %q: %q = %q, then %q", s, k, v, h2[k])
			}
		}
	})
}
