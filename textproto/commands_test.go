package textproto

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

func TestVersionAndQuit(t *testing.T) {
	ts := startServer(t, Options{})
	c := ts.dial()
	if got := c.expect("version 7\r\n", 200); got != "1.2.3-test" {
		t.Fatalf("version: %q", got)
	}
	a := c.call("version\n") // typed by hand: opaque 0, bare \n
	if a.code != 200 || a.opaque != 0 {
		t.Fatalf("version without opaque: %v", a)
	}
	c.write("\r\n\r\nquit\r\n") // empty lines are ignored
	c.expectClosed()
}

func TestPutGet(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("settlement.transfers", 2)
	c := ts.dial()

	if got := c.expect(putLine("settlement.transfers", 1, "hello", 0, 11), 200); got != "1 0" {
		t.Fatalf("put: %q", got)
	}
	if got := c.expect(putLine("settlement.transfers", 1, `{"amount":100}`, FlagJSON, 12), 200); got != "1 1" {
		t.Fatalf("put json: %q", got)
	}
	key := make([]byte, 4)
	binary.BigEndian.PutUint32(key, 6)
	keyed := string(key) + "acct-42"[:6] + "value!"
	a := c.call(putLine("settlement.transfers", -1, keyed, FlagKey, 13))
	if a.code != 200 || a.opaque != 13 {
		t.Fatalf("keyed put: %v", a)
	}
	var kp, ko int
	fmt.Sscanf(string(a.body), "%d %d", &kp, &ko)

	// get from partition 1: both messages, framed.
	a = c.call("get settlement.transfers g1 1 0 1048576 14\r\n")
	if a.kind != "value" || a.opaque != 14 {
		t.Fatalf("get: %v", a)
	}
	msgs, err := DecodeMessages(a.body)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	want := []string{"hello", `{"amount":100}`}
	if kp == 1 {
		want = append(want, "value!")
	}
	if len(msgs) != len(want) {
		t.Fatalf("got %d messages, want %d", len(msgs), len(want))
	}
	for i, m := range msgs {
		if string(m.Value) != want[i] || m.Offset != int64(i) || m.Timestamp.IsZero() {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	if msgs[0].ValueJSON || !msgs[1].ValueJSON || msgs[0].Key != nil {
		t.Fatalf("attributes: %+v %+v", msgs[0], msgs[1])
	}
	// The keyed message carries its key.
	a = c.call(fmt.Sprintf("get settlement.transfers g1 %d %d 100 15\r\n", kp, ko))
	msgs, err = DecodeMessages(a.body)
	if err != nil || len(msgs) != 1 || string(msgs[0].Key) != "acct-4" || string(msgs[0].Value) != "value!" {
		t.Fatalf("keyed get: %v %+v", err, msgs)
	}

	// max_bytes: at least one message, then only what fits.
	a = c.call("get settlement.transfers g1 1 0 1 16\r\n")
	if msgs, _ := DecodeMessages(a.body); len(msgs) != 1 {
		t.Fatalf("get with max_bytes 1: %d messages", len(msgs))
	}
	// At the end of partition 0: value 0.
	end0 := 0
	if kp == 0 {
		end0 = 1
	}
	a = c.call(fmt.Sprintf("get settlement.transfers g1 0 %d 100 17\r\n", end0))
	if a.kind != "value" || len(a.body) != 0 || a.opaque != 17 {
		t.Fatalf("get at the end of partition 0: %v", a)
	}
	end := 2
	if kp == 1 {
		end = 3
	}
	a = c.call(fmt.Sprintf("get settlement.transfers g1 1 %d 100 18\r\n", end))
	if a.kind != "value" || len(a.body) != 0 {
		t.Fatalf("get at the end: %v", a)
	}
	if got := c.expect(fmt.Sprintf("get settlement.transfers g1 1 %d 100 19\r\n", end+1), 416); !strings.Contains(got, "outside") {
		t.Fatalf("416 text: %q", got)
	}
	c.expect("get nosuch g1 0 0 100 20\r\n", 404)
	c.expect("get settlement.transfers g1 7 0 100 21\r\n", 404)
	c.expect(putLine("nosuch", 0, "x", 0, 22), 404)
	c.expect(putLine("settlement.transfers", 9, "x", 0, 23), 404)
	if got := c.expect(putLine("settlement.transfers", 0, "{not json", FlagJSON, 24), 400); !strings.Contains(got, "JSON") {
		t.Fatalf("bad json: %q", got)
	}
	c.expect(putLine("settlement.transfers", 0, "\x00\x00\x00\x09abc", FlagKey, 25), 400)
}

func TestOffsetCommit(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("orders", 1)
	c := ts.dial()
	for i := 0; i < 3; i++ {
		c.expect(putLine("orders", 0, "m", 0, int64(i)), 200)
	}
	if got := c.expect("offset orders billing 0 2 9\r\n", 200); got != "ok" {
		t.Fatalf("offset: %q", got)
	}
	offs, _ := ts.offsets.GroupOffsets(t.Context())
	if len(offs) != 1 || offs[0] != (GroupOffset{Group: "billing", Topic: "orders", Partition: 0, Next: 2}) {
		t.Fatalf("store holds %+v", offs)
	}
	c.expect("offset orders billing 0 4 10\r\n", 416)
	c.expect("offset orders billing 3 0 11\r\n", 404)
	c.expect("offset nosuch billing 0 0 12\r\n", 404)
	body := c.expect("stats groups 13\r\n", 200)
	if !strings.Contains(body, "STAT billing:orders:0 offset=2,lag=1\r\n") {
		t.Fatalf("stats groups: %q", body)
	}
}

func TestOffsetWithoutStore(t *testing.T) {
	ts := startServer(t, Options{})
	ts.s.opts.Offsets = nil // before any connection
	ts.createTopic("orders", 1)
	c := ts.dial()
	c.expect("offset orders billing 0 0 1\r\n", 503)
	if body := c.expect("stats groups 2\r\n", 200); body != "END\r\n" {
		t.Fatalf("stats groups without a store: %q", body)
	}
}

// TestPutJSONValue: a put with the JSON flag needs valid UTF-8 JSON (anything else is 400
// naming the problem, the connection stays usable, nothing is stored), in and out of a
// transaction; the value is stored compact, as the HTTP door stores it. A put without the
// flag is stored byte for byte.
func TestPutJSONValue(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	c := ts.dial()
	for i, bad := range []string{"\"\xff\"", "{\"k\":\"caf\xe9\"}", "[\"\xed\xa0\x80\"]"} { // Latin-1, a lone surrogate
		if got := c.expect(putLine("t", 0, bad, FlagJSON, int64(10+i)), 400); !strings.Contains(got, "UTF-8") {
			t.Errorf("put %q: %q does not say UTF-8", bad, got)
		}
	}
	key := c.expect("transaction TX:- s1 BEGIN 30 20\r\n", 200)
	if got := c.expect("put t 0 3 2 "+key+" 21\r\n\"\xff\"", 400); !strings.Contains(got, "UTF-8") {
		t.Errorf("put in a transaction: %q does not say UTF-8", got)
	}
	c.expect("transaction "+key+" s1 ROLLBACK 22\r\n", 200)

	c.expect(putLine("t", 0, "{ \"amount\" : 100,\r\n  \"memo\": \"a b\" }", FlagJSON, 30), 200)
	c.expect(putLine("t", 0, "{ \"raw\" : 1 }", 0, 31), 200)
	c.expect(putLine("t", 0, "\"caf\xc3\xa9\"", FlagJSON, 32), 200)
	msgs, err := DecodeMessages(c.call("get t g 0 0 1048576 33\r\n").body)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`{"amount":100,"memo":"a b"}`, `{ "raw" : 1 }`, "\"caf\xc3\xa9\""}
	if len(msgs) != len(want) {
		t.Fatalf("%d messages stored, want %d: %+v", len(msgs), len(want), msgs)
	}
	for i, m := range msgs {
		if string(m.Value) != want[i] {
			t.Errorf("message %d: %q, want %q", i, m.Value, want[i])
		}
	}
}
