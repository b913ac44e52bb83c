package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
)

func TestDecodeProduceRequest(t *testing.T) {
	msgs, err := decodeProduceRequest([]byte(` { "messages" : [
		{"key": "k\u00e9\ud83c\udf89", "value": { "a" : [ 1 , "x y" ] } , "headers": {"b":"2","a":"1"}, "partition": 3},
		{"value_base64": "AAE=", "key": null, "headers": null, "partition": null},
		{"value": null, "key": ""}
	] } `))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	if string(m.Key) != "ké🎉" || string(m.Value) != `{"a":[1,"x y"]}` || !m.ValueJSON || m.Partition != 3 ||
		len(m.Headers) != 2 || m.Headers[0].Key != "a" || m.Headers[1].Value != "2" {
		t.Errorf("message 0: %+v (value %s)", m, m.Value)
	}
	m = msgs[1]
	if m.Key != nil || !bytes.Equal(m.Value, []byte{0, 1}) || m.ValueJSON || m.Partition != -1 || m.Headers != nil {
		t.Errorf("message 1: %+v", m)
	}
	m = msgs[2]
	if m.Key == nil || len(m.Key) != 0 || string(m.Value) != "null" || !m.ValueJSON || m.Partition != -1 {
		t.Errorf("message 2: %+v", m)
	}
	// A lone surrogate becomes U+FFFD, as encoding/json does.
	msgs, err = decodeProduceRequest([]byte(`{"messages":[{"key":"\ud800x\udc00","value":1}]}`))
	if err != nil || string(msgs[0].Key) != "\uFFFDx\uFFFD" {
		t.Errorf("lone surrogates: %q %v", msgs[0].Key, err)
	}
	// Deep nesting is bounded.
	deep := `{"messages":[{"value":` + strings.Repeat("[", maxValueDepth+5) + strings.Repeat("]", maxValueDepth+5) + `}]}`
	if _, err := decodeProduceRequest([]byte(deep)); err == nil {
		t.Error("deep nesting accepted")
	}
}

// FuzzDecodeProduceRequest checks that the produce decoder never panics, accepts only valid
// JSON, and agrees with encoding/json on everything it accepts.
func FuzzDecodeProduceRequest(f *testing.F) {
	for _, s := range []string{
		`{"messages":[{"value":1}]}`,
		`{"messages":[{"key":"k","value":{"a":[1,2,{"b":null}]},"headers":{"h":"v","g":"w"},"partition":0}]}`,
		`{"messages":[{"value_base64":"AAEC","key":null}]}`,
		`{"messages":[{"value":"\u00e9\ud83d\ude00\n"},{"value":-1.5e-3,"partition":7}]}`,
		` { "messages" : [ { "value" : [ true , false , null ] } ] } `,
		`{"messages":[{"key":"\ud800","value":"x"}]}`,
		`{"messages":[]}`, `{"messages":[{"value":1}`, `[1]`, ``, `{"messages":[{"value":1,"value":2}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		msgs, err := decodeProduceRequest(body)
		if !bytes.Equal(body, orig) {
			t.Fatal("the decoder modified its input")
		}
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != 400 || (ae.code != "invalid_json" && ae.code != "invalid_field") || ae.message == "" {
				t.Fatalf("error %v is not a 400 invalid_json/invalid_field", err)
			}
			if ae.code == "invalid_field" && !json.Valid(body) {
				t.Fatalf("invalid_field for a body that is not JSON: %v", err)
			}
			if !utf8.Valid(body) && ae.code != "invalid_json" {
				t.Fatalf("invalid UTF-8 got %v", err)
			}
			return
		}
		if !utf8.Valid(body) || !json.Valid(body) {
			t.Fatalf("accepted a body that is not valid UTF-8 JSON: %q", body)
		}
		var ref api.ProduceRequest
		if err := json.Unmarshal(body, &ref); err != nil {
			t.Fatalf("accepted %q but encoding/json says %v", body, err)
		}
		if len(msgs) == 0 || len(msgs) != len(ref.Messages) {
			t.Fatalf("%d messages, encoding/json %d", len(msgs), len(ref.Messages))
		}
		for i, m := range msgs {
			r := ref.Messages[i]
			if (m.Key == nil) != (r.Key == nil) || (r.Key != nil && string(m.Key) != *r.Key) {
				t.Fatalf("message %d: key %q, encoding/json %v", i, m.Key, r.Key)
			}
			if m.ValueJSON {
				var c bytes.Buffer
				if err := json.Compact(&c, r.Value); err != nil || !bytes.Equal(c.Bytes(), m.Value) {
					t.Fatalf("message %d: value %s, encoding/json compact %s (%v)", i, m.Value, c.Bytes(), err)
				}
			} else {
				want, err := base64.StdEncoding.DecodeString(*r.ValueBase64)
				if err != nil || !bytes.Equal(want, m.Value) {
					t.Fatalf("message %d: base64 value %x, want %x (%v)", i, m.Value, want, err)
				}
			}
			wantPart := -1
			if r.Partition != nil {
				wantPart = *r.Partition
			}
			if m.Partition != wantPart {
				t.Fatalf("message %d: partition %d, encoding/json %d", i, m.Partition, wantPart)
			}
			if len(m.Headers) != len(r.Headers) {
				t.Fatalf("message %d: headers %v, encoding/json %v", i, m.Headers, r.Headers)
			}
			for _, h := range m.Headers {
				if r.Headers[h.Key] != h.Value {
					t.Fatalf("message %d: header %q=%q, encoding/json %q", i, h.Key, h.Value, r.Headers[h.Key])
				}
			}
			if !slices.IsSortedFunc(m.Headers, func(a, b broker.Header) int { return strings.Compare(a.Key, b.Key) }) {
				t.Fatalf("message %d: headers not sorted", i)
			}
		}
	})
}
