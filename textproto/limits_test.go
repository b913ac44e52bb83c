package textproto

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConnectionLimit(t *testing.T) {
	ts := startServer(t, Options{MaxConnections: 2})
	a, b := ts.dial(), ts.dial()
	a.expect("version 1\r\n", 200)
	b.expect("version 1\r\n", 200)
	c := ts.dial()
	ans := c.readAnswer()
	if ans.code != 503 || ans.opaque != 0 || !strings.Contains(string(ans.body), "too many connections") {
		t.Fatalf("refusal: %v", ans)
	}
	c.expectClosed()
	a.write("quit\r\n")
	a.expectClosed()
	// The slot is free again once the server has noticed.
	deadline := time.Now().Add(5 * time.Second)
	for ts.s.stats.currConns.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("connection count stays %d", ts.s.stats.currConns.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	ts.dial().expect("version 2\r\n", 200)
	if ts.s.stats.rejected.Load() != 1 {
		t.Fatalf("rejected = %d", ts.s.stats.rejected.Load())
	}
}

func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, Options{IdleTimeout: 150 * time.Millisecond})
	c := ts.dial()
	c.expect("version 1\r\n", 200)
	start := time.Now()
	c.expectClosed()
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("closed after %v, before the idle timeout", d)
	}
}

func TestAuth(t *testing.T) {
	ts := startServer(t, Options{Tokens: []Token{
		{Name: "payments", Token: "s3cret-payments", Produce: []string{"settlement.*"}, Consume: []string{"settlement.*"}},
		{Name: "reader", Token: "s3cret-reader", Consume: []string{"*"}},
	}})
	ts.createTopic("settlement.transfers", 1)
	ts.createTopic("hr", 1)

	// Anything but auth first: 401 and closed.
	c := ts.dial()
	if a := c.call("version 5\r\n"); a.code != 401 || a.opaque != 5 {
		t.Fatalf("before auth: %v", a)
	}
	c.expectClosed()
	c = ts.dial()
	if a := c.call(putLine("settlement.transfers", 0, "x", 0, 6)); a.code != 401 {
		t.Fatalf("put before auth: %v", a)
	}
	c.expectClosed()
	// A wrong token: 401 and closed; the answer does not echo it.
	c = ts.dial()
	a := c.call("auth wrong-token 7\r\n")
	if a.code != 401 || strings.Contains(string(a.body), "wrong-token") {
		t.Fatalf("wrong token: %v", a)
	}
	c.expectClosed()

	c = ts.dial()
	if got := c.expect("auth s3cret-payments 8\r\n", 200); got != "authenticated as payments" {
		t.Fatalf("auth: %q", got)
	}
	c.expect(putLine("settlement.transfers", 0, "x", 0, 9), 200)
	if got := c.expect(putLine("hr", 0, "x", 0, 10), 403); !strings.Contains(got, "produce") {
		t.Fatalf("forbidden put: %q", got)
	}
	c.expect("get hr g 0 0 100 11\r\n", 403)
	if a := c.call("get settlement.transfers g 0 0 100 12\r\n"); a.kind != "value" {
		t.Fatalf("allowed get: %v", a)
	}
	c.expect("stats 13\r\n", 200)

	r := ts.dial()
	r.expect("auth s3cret-reader 14\r\n", 200)
	r.expect(putLine("settlement.transfers", 0, "x", 0, 15), 403)
	if a := r.call("get hr g 0 0 100 16\r\n"); a.kind != "value" {
		t.Fatalf("reader get: %v", a)
	}
}

func TestGetAnswersValue(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	c := ts.dial()
	if a := c.call("get t g 0 0 100 1\r\n"); a.kind != "value" || len(a.body) != 0 {
		t.Fatalf("empty get: %v", a)
	}
}

// TestClose: Close answers what is executing, closes idle connections at once and makes
// Serve return ErrServerClosed.
func TestClose(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	idle := ts.dial()
	idle.expect("version 1\r\n", 200)
	busy := ts.dial()
	var sb strings.Builder
	for i := 0; i < 200; i++ {
		sb.WriteString(putLine("t", 0, "m", 0, int64(i)))
	}
	busy.write(sb.String())
	first := busy.readAnswer() // the server is working on them
	start := time.Now()
	if err := ts.s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("close took %v", d)
	}
	idle.expectClosed()
	// Every answer the busy client gets is a whole, successful one.
	n := 1
	for {
		a, err := busy.tryRead()
		if err != nil {
			break
		}
		if a.code != 200 {
			t.Fatalf("answer after close: %v", a)
		}
		n++
	}
	if ti, _ := ts.b.Topic("t"); ti.Partitions[0].EndOffset != int64(n) {
		t.Fatalf("%d answers for %d messages appended (first %v)", n, ti.Partitions[0].EndOffset, first)
	}
	select {
	case err := <-ts.served:
		if !errors.Is(err, ErrServerClosed) {
			t.Fatalf("Serve: %v", err)
		}
		ts.served <- err // for stop
	case <-time.After(5 * time.Second):
		t.Fatalf("Serve did not return")
	}
}

// TestCloseSlowReader: Close does not wait on a client that reads its answers slowly. The
// answers queued for it when Close is called get WriteTimeout in all to be written, not
// WriteTimeout each: a client that read just fast enough to keep each write alive held Close
// (and so the server's shutdown) until it had read them all.
func TestCloseSlowReader(t *testing.T) {
	const writeTimeout = time.Second
	ts := startServer(t, Options{WriteTimeout: writeTimeout})
	ts.createTopic("t", 1)
	ts.dial().expect(putLine("t", 0, strings.Repeat("v", 64<<10), 0, 1), 200)
	c := ts.dial()
	c.nc.(*net.TCPConn).SetReadBuffer(64 << 10)
	var sb strings.Builder
	for i := 0; i < 512; i++ { // 32 MiB of answers: more than the answer budget and the sockets hold
		fmt.Fprintf(&sb, "get t g 0 0 1048576 %d\r\n", i)
	}
	c.write(sb.String())
	stop := make(chan struct{})
	read := make(chan struct{})
	go func() { // 256 KiB every 100ms: slow, but each write finishes within WriteTimeout
		defer close(read)
		buf := make([]byte, 256<<10)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond): // pacing the slow client
			}
			c.nc.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := io.ReadFull(c.nc, buf); err != nil {
				return
			}
		}
	}()
	var once sync.Once
	cut := func() { once.Do(func() { close(stop); c.nc.Close(); <-read }) }
	defer cut()
	// Wait until the answer budget holds the reader: the server has a budget's worth queued.
	deadline := time.Now().Add(10 * time.Second)
	for _, throttled := connQueue(ts.s); !throttled; _, throttled = connQueue(ts.s) {
		if time.Now().After(deadline) {
			t.Fatalf("the server never held the reader (%d gets executed)", ts.s.stats.cmdGet.Load())
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- ts.s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
		if d := time.Since(start); d > writeTimeout+2*time.Second {
			t.Fatalf("close took %v with a write timeout of %v: it waited for the slow reader", d, writeTimeout)
		}
	case <-time.After(writeTimeout + 20*time.Second):
		cut()
		<-closed
		t.Fatalf("Close still waited on the slow reader %v after it was called (write timeout %v)", time.Since(start), writeTimeout)
	}
}

// TestAnswerBudget: a client that pipelines large gets and never reads does not make the
// server hold their answers: past AnswerBufferBytes of queued answers the connection's next
// request is not read until the client reads.
func TestAnswerBudget(t *testing.T) {
	const budget = 64 << 10
	ts := startServer(t, Options{AnswerBufferBytes: budget})
	ts.createTopic("t", 1)
	value := strings.Repeat("v", 256<<10)
	ts.dial().expect(putLine("t", 0, value, 0, 1), 200)
	const gets = 128 // 32 MiB of answers, more than the sockets' buffers hold
	c := ts.dial()
	var sb strings.Builder
	for i := 0; i < gets; i++ {
		fmt.Fprintf(&sb, "get t g 0 0 1048576 %d\r\n", i)
	}
	c.write(sb.String())
	// Wait until the server has executed every get, or holds the connection's reader.
	var queued int
	deadline := time.Now().Add(10 * time.Second)
	for {
		var throttled bool
		queued, throttled = connQueue(ts.s)
		if throttled || ts.s.stats.cmdGet.Load() == gets {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server neither executed the %d gets nor held the reader (%d executed)", gets, ts.s.stats.cmdGet.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if n := ts.s.stats.cmdGet.Load(); n == gets {
		t.Fatalf("the server executed all %d gets while the client read nothing", n)
	}
	answer := 35 + len(value) + 64 // one get's answer: frame, header line, trailer
	if queued > budget+answer {
		t.Fatalf("%d bytes of answers queued, budget %d", queued, budget)
	}
	// Reading lets the server go on; every answer comes, in order.
	for i := 0; i < gets; i++ {
		a := c.readAnswer()
		if a.kind != "value" || a.opaque != int64(i) || len(a.body) != 35+len(value) {
			t.Fatalf("answer %d: %v", i, a)
		}
	}
}

// connQueue reports the answer bytes queued by the server's only connection that has any, and
// whether its reader waits for them to drain.
func connQueue(s *Server) (queued int, throttled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.mu.Lock()
		q, th := c.queued, c.throttled
		c.mu.Unlock()
		if q > queued || th {
			queued, throttled = q, th
		}
	}
	return queued, throttled
}

// TestAuthDeadline: with auth configured, a connection must authenticate within AuthTimeout
// of being accepted; empty lines do not extend the deadline. Once authenticated, or without
// auth, only the idle timeout applies.
func TestAuthDeadline(t *testing.T) {
	const authTimeout = 300 * time.Millisecond
	ts := startServer(t, Options{AuthTimeout: authTimeout, Tokens: []Token{
		{Name: "payments", Token: "s3cret-payments", Produce: []string{"*"}},
	}})
	c := ts.dial()
	start := time.Now()
	stop := make(chan struct{})
	defer close(stop)
	go func(nc net.Conn) { // an empty line every 50ms, as a client holding a slot would send
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond): // pacing
			}
			nc.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := nc.Write([]byte("\r\n")); err != nil {
				return
			}
		}
	}(c.nc)
	a := c.readAnswer()
	if a.code != 401 || !strings.Contains(string(a.body), "auth") {
		t.Fatalf("no auth in time: %v", a)
	}
	c.expectClosed()
	if d := time.Since(start); d < authTimeout-50*time.Millisecond || d > 5*time.Second {
		t.Fatalf("closed after %v; the auth timeout is %v", d, authTimeout)
	}
	if n := ts.s.stats.authFailures.Load(); n != 1 {
		t.Fatalf("auth failures = %d", n)
	}

	// Authenticated in time: the auth timeout no longer applies.
	c = ts.dial()
	c.expect("auth s3cret-payments 1\r\n", 200)
	time.Sleep(2 * authTimeout) // the time passing is what is tested
	c.expect("version 2\r\n", 200)

	// Without auth the auth timeout does not apply.
	open := startServer(t, Options{AuthTimeout: authTimeout})
	c = open.dial()
	time.Sleep(2 * authTimeout)
	c.expect("version 3\r\n", 200)
}
