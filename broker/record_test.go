package broker

import (
	"bytes"
	"strings"
	"testing"
)

func TestRecordRoundTrip(t *testing.T) {
	cases := []Message{
		{},
		{Key: []byte{}, Value: []byte("v")},
		{Key: []byte("k"), Value: []byte(`{"a":1}`), ValueJSON: true, Headers: []Header{{"a", "b"}, {"", ""}}},
		{Value: bytes.Repeat([]byte{0xff}, 5000)},
	}
	for i, m := range cases {
		buf, crc := appendRecord(nil, 7, 3, 99, 1234, &m)
		if len(buf) != recordSize(&m) {
			t.Fatalf("case %d: size %d, recordSize %d", i, len(buf), recordSize(&m))
		}
		r, err := decodeRecord(buf)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if r.CRC != crc || r.TopicID != 7 || r.Partition != 3 || r.Offset != 99 || r.Timestamp != 1234 ||
			(r.Key == nil) != (m.Key == nil) || !bytes.Equal(r.Key, m.Key) || !bytes.Equal(r.Value, m.Value) ||
			(r.Attrs&attrValueJSON != 0) != m.ValueJSON || len(r.Headers) != len(m.Headers) {
			t.Fatalf("case %d: got %+v", i, r)
		}
		for j := range buf {
			bad := bytes.Clone(buf)
			bad[j] ^= 0x40
			if _, err := decodeRecord(bad); err == nil && j >= 4 {
				t.Fatalf("case %d: flipping byte %d went unnoticed", i, j)
			}
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	m := Message{Key: []byte("k"), Value: []byte("value"), Headers: []Header{{"h", "v"}}}
	rec, _ := appendRecord(nil, 1, 0, 5, 10, &m)
	f.Add(rec)
	batch := make([]byte, batchHeaderSize)
	batch = append(batch, rec...)
	putBatchHeader(batch, batchHeader{Length: uint32(len(batch)), Type: batchMessages, Count: 1})
	f.Add(batch)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := decodeRecord(b); err == nil {
			if r.Size > len(b) || len(r.Value) > len(b) {
				t.Fatalf("decoded sizes beyond input")
			}
			re, _ := appendRecord(nil, r.TopicID, r.Partition, r.Offset, r.Timestamp, &Message{Key: r.Key, Value: r.Value, ValueJSON: r.Attrs&attrValueJSON != 0, Headers: r.Headers})
			if r.Attrs&^(attrHasKey|attrValueJSON) == 0 && !bytes.Equal(re, b[:r.Size]) {
				t.Fatalf("re-encoding differs")
			}
		}
		decodeBatch(b, nil)
	})
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"settlement.transfers": true, "a": true, "A-b_c.9": true, strings.Repeat("x", 249): true,
		"": false, strings.Repeat("x", 250): false, "a b": false, "a/b": false, "é": false, "a\n": false,
	} {
		if got := ValidName(name); got != want {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, want)
		}
	}
}
