package gateway

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
)

// rawRequest writes req on a new connection to addr (half-closing the connection's write side
// after it when halfClose), reads the answer and returns it.
func rawRequest(t *testing.T, addr, req string, halfClose bool) response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a hung server fails the test, not the run
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	if halfClose {
		if err := c.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer body: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// TestUnreadableBody: a request body that cannot be read (malformed chunked encoding, shorter
// than its Content-Length, not sent within the read timeout) is 400 invalid_json with a
// message naming the problem, logged below Error; nothing is stored.
func TestUnreadableBody(t *testing.T) {
	var logs testenv.SyncBuffer
	ts := startServer(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ts.createTopic("t", 1)
	slow := httptest.NewUnstartedServer(ts.s.Handler())
	slow.Config.ReadTimeout = 500 * time.Millisecond
	slow.Start()
	t.Cleanup(slow.Close)

	const head = "POST /v1/topics/t/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
	const msg = `{"messages":[{"value":1}]}`
	cases := []struct {
		name, addr, req string
		halfClose       bool
		want            string // in the error message
	}{
		{"bad chunk size", ts.hs.Listener.Addr().String(),
			head + "Transfer-Encoding: chunked\r\n\r\nzz\r\n" + msg + "\r\n0\r\n\r\n", false, "could not be read"},
		{"chunked body cut short", ts.hs.Listener.Addr().String(),
			head + "Transfer-Encoding: chunked\r\n\r\n40\r\n" + msg, true, "ended after"},
		{"shorter than Content-Length", ts.hs.Listener.Addr().String(),
			head + "Content-Length: 100\r\n\r\n" + msg, true, "ended after 26 bytes"},
		{"read timeout", slow.Listener.Addr().String(),
			head + "Content-Length: 100\r\n\r\n" + msg, false, "read timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := rawRequest(t, c.addr, c.req, c.halfClose)
			expectError(t, r, http.StatusBadRequest, "invalid_json", "")
			if m := errorBody(t, r).Error.Message; !strings.Contains(m, c.want) {
				t.Errorf("message %q does not say %q", m, c.want)
			}
		})
	}
	if got := ts.fetch("t", 0, "offset=0").Messages; len(got) != 0 {
		t.Errorf("%d messages stored from unreadable bodies", len(got))
	}
	l := logs.String()
	if strings.Contains(l, "level=ERROR") {
		t.Errorf("an unreadable body was logged as an error:\n%s", l)
	}
	if n := strings.Count(l, "request body unreadable"); n != len(cases) {
		t.Errorf("%d debug lines for %d unreadable bodies:\n%s", n, len(cases), l)
	}
}
