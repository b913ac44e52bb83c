package gateway

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// checkEscape asserts that appendJSONString(s) is one valid JSON string that decodes to
// what encoding/json's own round trip of s gives (invalid UTF-8 becomes U+FFFD in both).
func checkEscape(t *testing.T, s string) {
	t.Helper()
	got := appendJSONString(nil, s)
	if !json.Valid(got) {
		t.Fatalf("appendJSONString(%q) = %s: not valid JSON", s, got)
	}
	var dec string
	if err := json.Unmarshal(got, &dec); err != nil {
		t.Fatalf("appendJSONString(%q) = %s: %v", s, got, err)
	}
	ref, _ := json.Marshal(s)
	var want string
	if err := json.Unmarshal(ref, &want); err != nil {
		t.Fatal(err)
	}
	if dec != want {
		t.Fatalf("appendJSONString(%q) decodes to %q, encoding/json gives %q", s, dec, want)
	}
	if b := appendJSONString(nil, []byte(s)); string(b) != string(got) {
		t.Fatalf("string and []byte forms differ: %s vs %s", got, b)
	}
	if !utf8.Valid(got) || strings.ContainsAny(string(got), "\u2028\u2029") {
		t.Fatalf("appendJSONString(%q) = %q: invalid UTF-8 or raw U+2028/9", s, got)
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "ctl \x00\x01\x1f\x7f", "\n\r\t\b\f",
		"é ü 中文 🎉", "\u2028\u2029", "bad \xff utf8 \xc3", "<html>&amp;", "\xed\xa0\x80 surrogate",
		strings.Repeat("a", 1000) + "\"",
	} {
		checkEscape(t, s)
	}
	if got := string(appendJSONString(nil, "a\"b\\c\nd\x01")); got != `"a\"b\\c\nd\u0001"` {
		t.Errorf("got %s", got)
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "x", "\"\\", "\xff", "\u2028", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkEscape(t, s) })
}

func TestAppendTimestamp(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 11, 24, 9, 30, 0, 123456789, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", 3600)),
		time.UnixMilli(0),
		time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		want := `"` + tm.UTC().Format("2006-01-02T15:04:05.000Z07:00") + `"`
		if got := string(appendTimestamp(nil, tm)); got != want {
			t.Errorf("appendTimestamp(%v) = %s, want %s", tm, got, want)
		}
	}
}
