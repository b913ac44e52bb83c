package jsontext

import (
	"bytes"
	"encoding/json"
	"testing"
)

func TestCompact(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`1`, `1`},
		{`{"a":1}`, `{"a":1}`},
		{" {\n\t\"a\" : [ 1 , 2 ],\r\n\"b\":\"x y\" } ", `{"a":[1,2],"b":"x y"}`},
		{`"a \" b"`, `"a \" b"`},
		{`{"k\\": "v "}`, `{"k\\":"v "}`},
		{`[ "é ✓" ]`, `["é ✓"]`},
	} {
		got := Compact([]byte(c.in))
		if string(got) != c.want {
			t.Errorf("Compact(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	in := []byte(`{"a":"b c"}`)
	if got := Compact(in); &got[0] != &in[0] {
		t.Error("Compact copied text without whitespace between tokens")
	}
}

// FuzzCompact: Compact agrees with encoding/json's Compact on every valid JSON text.
func FuzzCompact(f *testing.F) {
	for _, s := range []string{`{"a": [1, 2]}`, ` "x\" y" `, `[]`, "{\n}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		if !json.Valid(v) {
			return
		}
		var want bytes.Buffer
		if err := json.Compact(&want, v); err != nil {
			t.Fatal(err)
		}
		if got := Compact(v); !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("Compact(%q) = %q, want %q", v, got, want.Bytes())
		}
	})
}
