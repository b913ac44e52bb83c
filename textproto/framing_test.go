package textproto

import (
	"bytes"
	"encoding/hex"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
)

// exampleMessage is the worked example of docs/protocol.md.
func exampleMessage() broker.FetchedMessage {
	return broker.FetchedMessage{
		Offset:    42,
		Timestamp: time.Date(2026, 11, 24, 9, 30, 0, 123e6, time.UTC),
		Key:       []byte("acct-42"),
		Value:     []byte(`{"amount":100}`),
		ValueJSON: true,
		Headers:   []broker.Header{{Key: "trace", Value: "ab12"}},
	}
}

// exampleFrame is docs/protocol.md's example, byte for byte.
const exampleFrame = "000000000000002a" + // offset 42
	"0000003b" + // length 59: the bytes after this field
	"a36f5c0c" + // CRC-32C of the 55 bytes after this field
	"000001a20ce4063b" + // timestamp 1795512600123 ms = 2026-11-24T09:30:00.123Z
	"03" + // attributes: has key, value is JSON
	"00000007" + // key length 7
	"0000000e" + // value length 14
	"0001" + // 1 header
	"616363742d3432" + // key "acct-42"
	"0005" + "7472616365" + // header name length 5, "trace"
	"00000004" + "61623132" + // header value length 4, "ab12"
	"7b22616d6f756e74223a3130307d" // value {"amount":100}

func TestFramingExample(t *testing.T) {
	m := exampleMessage()
	got := appendFrame(nil, &m)
	want, _ := hex.DecodeString(exampleFrame)
	if !bytes.Equal(got, want) {
		t.Fatalf("frame:\n got %x\nwant %x", got, want)
	}
	msgs, err := DecodeMessages(append(got, got...))
	if err != nil || len(msgs) != 2 {
		t.Fatalf("decode: %v, %d messages", err, len(msgs))
	}
	d := msgs[0]
	if d.Offset != 42 || !d.Timestamp.Equal(m.Timestamp) || string(d.Key) != "acct-42" || string(d.Value) != `{"amount":100}` ||
		!d.ValueJSON || len(d.Headers) != 1 || d.Headers[0] != m.Headers[0] {
		t.Fatalf("decoded %+v", d)
	}
	// A flipped byte is caught by the CRC.
	bad := bytes.Clone(got)
	bad[40] ^= 1
	if _, err := DecodeMessages(bad); err == nil {
		t.Fatalf("corrupt frame decoded")
	}
	// No key: attribute bit 0 clear, key length 0, Key nil.
	m.Key, m.Headers, m.ValueJSON = nil, nil, false
	msgs, err = DecodeMessages(appendFrame(nil, &m))
	if err != nil || msgs[0].Key != nil || msgs[0].ValueJSON {
		t.Fatalf("unkeyed: %v %+v", err, msgs)
	}
}

// FuzzDecodeMessages: the decoder never panics, and what it decodes re-encodes to the input.
func FuzzDecodeMessages(f *testing.F) {
	m := exampleMessage()
	f.Add(appendFrame(nil, &m))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, p []byte) {
		msgs, err := DecodeMessages(p)
		if err != nil {
			return
		}
		var out []byte
		for _, d := range msgs {
			fm := broker.FetchedMessage{Offset: d.Offset, Timestamp: d.Timestamp, Key: d.Key, Value: d.Value, ValueJSON: d.ValueJSON, Headers: d.Headers}
			out = appendFrame(out, &fm)
		}
		if len(out) != len(p) {
			t.Fatalf("re-encoded %d bytes from %d", len(out), len(p))
		}
	})
}
