package outbox

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/client"
)

// FuzzEncodedSize: encodedSize never counts a message smaller than it is in the produce
// request ClientPublisher sends (JSON escapes included: HTML characters, control characters,
// invalid UTF-8, U+2028), nor larger than that by more than messageFraming; and it is at
// least what the broker counts against its per-message limit.
func FuzzEncodedSize(f *testing.F) {
	f.Add("", "", "", []byte(nil))
	f.Add("account-42", "trace", "00-4bf92f3577b34da6-01", []byte(`{"amount":100}`))
	f.Add(`k"\`, "<h>", "a&b<c>\x00\x01\x1f\b\f\n\r\t\x7f", []byte{0, 1, 2})
	f.Add("\u2028\u2029", "é", "\xff\xfe\xc3", []byte("x"))
	f.Add("日本", strings.Repeat("<", 100), strings.Repeat("\x00", 100), make([]byte, 1000))
	f.Fuzz(func(t *testing.T, key, hname, hvalue string, payload []byte) {
		m := Message{Topic: "t", Key: key, Payload: payload}
		if hname != "" || hvalue != "" {
			m.Headers = map[string]string{hname: hvalue, hname + "2": hvalue}
		}
		one, err := json.Marshal(api.ProduceRequest{Messages: []client.Message{clientMessage(m)}})
		if err != nil {
			t.Fatal(err)
		}
		two, err := json.Marshal(api.ProduceRequest{Messages: []client.Message{clientMessage(m), clientMessage(m)}})
		if err != nil {
			t.Fatal(err)
		}
		est := encodedSize(&m)
		if len(one) > requestFraming+est || len(two) > requestFraming+2*est {
			t.Fatalf("estimated %d bytes (+%d), the request takes %d for one message, %d for two", est, requestFraming, len(one), len(two))
		}
		if slack := requestFraming + est - len(one); slack > messageFraming {
			t.Errorf("estimated %d bytes, the request takes %d: %d more than the framing", requestFraming+est, len(one), slack)
		}
		if raw := rawSize(&m); est < raw {
			t.Errorf("estimated %d bytes, the broker counts %d", est, raw)
		}
	})
}

// rowsOf returns rows with payloads of sizes bytes, ids from 1, sized as the stores size them.
func rowsOf(sizes ...int) []row {
	rows := make([]row, len(sizes))
	for i, n := range sizes {
		rows[i].pos.id = int64(i + 1)
		rows[i].msg.Payload = make([]byte, n)
		rows[i].size = encodedSize(&rows[i].msg)
	}
	return rows
}

// TestCut: a batch holds rows up to BatchBytes of their encoded size, at least one row; a row
// larger than BatchBytes, or above soloRawBytes, goes alone.
func TestCut(t *testing.T) {
	r := &Relay{opts: Options{BatchSize: 10}}
	const solo = soloRawBytes + 1
	for _, c := range []struct {
		batchBytes int
		sizes      []int // payload bytes; a row's encoded size is 4/3 of it + 64
		n          int
		full       bool
	}{
		{1000, []int{100, 100, 100}, 3, false},
		{1000, []int{10, 10, 10, 10, 10, 10, 10, 10, 10, 10}, 10, true}, // BatchSize
		{1000, []int{300, 300, 300}, 2, true},                           // 3 × (400 + 64) > 1000
		{1000, []int{2000, 100}, 1, true},                               // larger than BatchBytes: alone
		{1000, []int{100, 2000}, 1, true},                               // and after the rows before it
		{1000, []int{2000}, 1, false},
		{4 << 20, []int{100, solo, 100}, 1, true}, // above soloRawBytes: alone, within BatchBytes
		{4 << 20, []int{solo, 100}, 1, true},
	} {
		r.opts.BatchBytes = c.batchBytes
		batch, full := r.cut(rowsOf(c.sizes...))
		if len(batch) != c.n || full != c.full {
			t.Errorf("cut %v at %d bytes: %d rows, full %v; want %d, %v", c.sizes, c.batchBytes, len(batch), full, c.n, c.full)
		}
	}
}

// TestTooLargeSuspect: when the publisher refuses a request for its size, the row the relay
// logs a command for is the request's only row, or a row over the broker's default limit on
// one message (in a batch claimed by an earlier version, which did not send such rows alone);
// in a request of rows each within that limit it names none (the request's body is too large).
func TestTooLargeSuspect(t *testing.T) {
	for _, c := range []struct {
		sizes []int
		want  int64
	}{
		{[]int{10}, 1},
		{[]int{10, 20, 30}, 0},
		{[]int{10, soloRawBytes + 1, 30, soloRawBytes + 2, 50}, 4},
	} {
		var got int64
		if rw := (&tooLargeError{rows: rowsOf(c.sizes...)}).suspect(); rw != nil {
			got = rw.pos.id
		}
		if got != c.want {
			t.Errorf("rows of %v bytes: suspect row %d, want %d", c.sizes, got, c.want)
		}
	}
}
