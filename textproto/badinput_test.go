package textproto

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestBadInput: each malformed request gets result 400 naming the problem, with the client's
// opaque when it could be read, and the connection keeps serving.
func TestBadInput(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	c := ts.dial()
	cases := []struct {
		req    string
		opaque int64
		says   string
	}{
		{"frobnicate 1\r\n", 1, "unknown command"},
		{"PUT t 0 1 0 2\r\n", 2, "unknown command"},
		{"get t g 0 0 3\r\n", 3, "6 arguments"},
		{"get t g 0 0 100 200 4\r\n", 4, "6 arguments"},
		{"offset t g 0 5\r\n", 5, "5 arguments"},
		{"put t 0 0 6\r\n", 6, "5 or 6 arguments"},
		{"put t 0 1 0\r\nx", 0, "5 or 6 arguments"},
		{"put t zero 1 0 7\r\nx", 7, "partition \"zero\" is not an integer"},
		{"put t -2 1 0 10\r\nx", 10, "partition -2 is out of range"},
		{"put t 0 1 4 11\r\nx", 11, "flag 4 has unknown bits"},
		{"put t/x 0 1 0 12\r\nx", 12, "topic name"},
		{"put t 0 1 0 TX 13\r\nx", 13, "txkey"},
		{"get t g 0 -1 100 15\r\n", 15, "offset -1 is negative"},
		{"get t g 0 0 0 16\r\n", 16, "max_bytes 0 is out of range"},
		{"get t g* 0 0 100 17\r\n", 17, "group name"},
		{"offset t .. 0 0 22\r\n", 22, "group name \"..\" is reserved"},
		{"get . g 0 0 100 23\r\n", 23, "topic name \".\" is reserved"},
		{"get t g 0 0 100 op\r\n", 0, "opaque \"op\" is not an integer"},
		{"version 1 2\r\n", 2, "at most 1 argument"},
		{"quit now\r\n", 0, "no arguments"},
		{"transaction TX:- s SOMETIMES 18\r\n", 18, "transaction type"},
		{"transaction TX:- s BEGIN 0 19\r\n", 19, "timeout_s 0 is out of range"},
		{"transaction TX:1 s COMMIT_ONE_PHASE 5 20\r\n", 20, "only taken by BEGIN"},
		{"transaction s BEGIN 21\r\n", 21, "4 or 5 arguments"},
		{"stats a b c\r\n", 0, "at most 2 arguments"},
		{"auth\r\n", 0, "2 arguments"},
	}
	for _, tc := range cases {
		a := c.call(tc.req)
		if a.kind != "result" || a.code != 400 || a.opaque != tc.opaque || !strings.Contains(string(a.body), tc.says) {
			t.Errorf("%q: got %v, want 400 with opaque %d saying %q", tc.req, a, tc.opaque, tc.says)
		}
		if got := c.expect("version 99\r\n", 200); got == "" {
			t.Fatalf("after %q the connection does not serve", tc.req)
		}
	}
	if ti, _ := ts.b.Topic("t"); ti.Partitions[0].EndOffset != 0 {
		t.Fatalf("bad input appended %d messages", ti.Partitions[0].EndOffset)
	}
}

// TestTruncatedPayload: a put whose payload stops arriving gets result 400 and the connection
// is closed: the bytes that come late must not be read as requests (a late payload that holds
// a put line would otherwise be executed).
func TestTruncatedPayload(t *testing.T) {
	ts := startServer(t, Options{PayloadTimeout: 200 * time.Millisecond})
	ts.createTopic("t", 1)
	c := ts.dial()
	c.write("put t 0 30 0 5\r\nhello")
	a := c.readAnswer()
	if a.code != 400 || a.opaque != 5 || !strings.Contains(string(a.body), "truncated payload: 5 of 30") ||
		!strings.Contains(string(a.body), "closing the connection") {
		t.Fatalf("truncated: %v", a)
	}
	// The rest of the payload comes late, and it looks like a request: it must not run.
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.nc.Write([]byte("memo\nput t 0 8 0 77\r\nSMUGGLED"))
	c.expectClosed()
	// At EOF the connection just closes.
	c = ts.dial()
	c.write("put t 0 10 0 7\r\nhel")
	c.nc.(interface{ CloseWrite() error }).CloseWrite()
	c.expectClosed()
	// A put that is refused anyway (here: a bad partition) is closed the same way when its
	// payload is truncated.
	c = ts.dial()
	c.write("put t zero 10 0 8\r\nhel")
	if a := c.readAnswer(); a.code != 400 || !strings.Contains(string(a.body), "truncated payload: 3 of 10") {
		t.Fatalf("truncated bad put: %v", a)
	}
	c.expectClosed()
	if ti, _ := ts.b.Topic("t"); ti.Partitions[0].EndOffset != 0 {
		t.Fatalf("a truncated put appended a message")
	}
}

// TestSlowPayload: PayloadTimeout bounds the wait for the next bytes of a payload, not the
// whole payload: a payload that keeps arriving slowly is accepted, up to PayloadMaxTime.
func TestSlowPayload(t *testing.T) {
	ts := startServer(t, Options{PayloadTimeout: 150 * time.Millisecond, PayloadMaxTime: time.Minute})
	ts.createTopic("t", 1)
	c := ts.dial()
	payload := "0123456789"
	c.write(fmt.Sprintf("put t 0 %d 0 1\r\n", len(payload)))
	for i := range payload { // 10 x 50ms: longer than PayloadTimeout, never idle that long
		time.Sleep(50 * time.Millisecond) // pacing the sender, not waiting for the server
		c.write(payload[i : i+1])
	}
	if got := c.expect("", 200); got != "0 0" {
		t.Fatalf("slow put: %q", got)
	}

	// PayloadMaxTime caps the whole payload however steadily it arrives.
	ts = startServer(t, Options{PayloadTimeout: 150 * time.Millisecond, PayloadMaxTime: 300 * time.Millisecond})
	ts.createTopic("t", 1)
	c = ts.dial()
	c.write("put t 0 1000 0 2\r\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 1000; i++ {
			time.Sleep(20 * time.Millisecond) // pacing
			c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.nc.Write([]byte("x")); err != nil {
				return // the server closed the connection
			}
		}
	}()
	start := time.Now()
	if a := c.readAnswer(); a.code != 400 || !strings.Contains(string(a.body), "truncated payload") {
		t.Fatalf("capped put: %v", a)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the cap took %v", d)
	}
	c.expectClosed()
	c.nc.Close()
	<-done
}

// TestBadLength: a put whose payload length cannot be read, or is over the limit, is answered
// and the connection is closed: the server cannot know where the payload ends, so what
// follows must not be read as requests.
func TestBadLength(t *testing.T) {
	ts := startServer(t, Options{MaxPayloadBytes: 1000})
	ts.createTopic("t", 1)
	const smuggled = "put t 0 8 0 77\r\nSMUGGLED"
	cases := []struct {
		req    string
		code   int
		opaque int64
		says   string
	}{
		{"put t 0 1x 0 8\r\n", 400, 8, "length \"1x\" is not an integer"},
		{"put t 0 -5 0 9\r\n", 400, 9, "length -5 is negative"},
		{"put t 0 - 0 10\r\n", 400, 10, "length \"-\" is not an integer"},
		{"put t 0 1001 0 11\r\n", 413, 11, "over the limit of 1000 bytes"},
		{"put t 0 2147483648 0 12\r\n", 413, 12, "over the limit of 1000 bytes"},
		{"put t 0 99999999999 0 13\r\n", 413, 13, "over the limit of 1000 bytes"},
		{"put t 0 99999999999999999999999 0 14\r\n", 413, 14, "over the limit of 1000 bytes"},
		{"put t 0 x 0 TX:1 15 extra\r\n", 400, 0, "5 or 6 arguments"},
		{"put t 0\r\n", 400, 0, "5 or 6 arguments"},
		{"put\r\n", 400, 0, "5 or 6 arguments"},
	}
	for _, tc := range cases {
		c := ts.dial()
		c.write(tc.req + smuggled)
		a := c.readAnswer()
		if a.kind != "result" || a.code != tc.code || a.opaque != tc.opaque || !strings.Contains(string(a.body), tc.says) ||
			!strings.Contains(string(a.body), "closing the connection") {
			t.Errorf("%q: got %v, want %d with opaque %d saying %q and closing", tc.req, a, tc.code, tc.opaque, tc.says)
		}
		c.expectClosed()
	}
	if ti, _ := ts.b.Topic("t"); ti.Partitions[0].EndOffset != 0 {
		t.Fatalf("%d messages were smuggled in after a bad length", ti.Partitions[0].EndOffset)
	}
}

// TestOversize: a length over the limit gets 413 and closes that connection only.
func TestOversize(t *testing.T) {
	ts := startServer(t, Options{MaxPayloadBytes: 1000})
	ts.createTopic("t", 1)
	other := ts.dial()
	other.expect("version 1\r\n", 200)
	c := ts.dial()
	c.write("put t 0 1001 0 2\r\n" + strings.Repeat("x", 1001))
	if a := c.readAnswer(); a.code != 413 || a.opaque != 2 {
		t.Fatalf("oversize: %v", a)
	}
	c.expectClosed()
	other.expect(putLine("t", 0, strings.Repeat("y", 1000), 0, 3), 200)
}

// TestLongLine: a line past MaxLineBytes without a newline gets 400 and the connection closes.
func TestLongLine(t *testing.T) {
	ts := startServer(t, Options{})
	c := ts.dial()
	c.write("version " + strings.Repeat("9", 5000))
	if a := c.readAnswer(); a.code != 400 || !strings.Contains(string(a.body), "longer than 4096") {
		t.Fatalf("long line: %v", a)
	}
	c.expectClosed()
	ts.dial().expect("version 1\r\n", 200)
}
