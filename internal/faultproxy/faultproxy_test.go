package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// echoServer is a real TCP server on 127.0.0.1 that writes back what it reads, after a tag of
// its own, and counts the bytes it received.
type echoServer struct {
	ln       net.Listener
	tag      byte
	received atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func startEcho(t *testing.T, tag byte) *echoServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echoServer{ln: ln, tag: tag}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.conns = append(e.conns, c)
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						e.received.Add(int64(n))
						out := make([]byte, 0, n)
						for _, b := range buf[:n] {
							out = append(out, b^e.tag) // the tag shows which server answered
						}
						if _, err := c.Write(out); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		e.mu.Lock()
		for _, c := range e.conns {
			c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
	return e
}

func (e *echoServer) addr() string { return e.ln.Addr().String() }

func newProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads len(msg) bytes back within d.
func roundTrip(c net.Conn, msg []byte, d time.Duration) ([]byte, error) {
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	return got, err
}

func xor(b []byte, tag byte) []byte {
	out := make([]byte, len(b))
	for i := range b {
		out[i] = b[i] ^ tag
	}
	return out
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func TestPassThrough(t *testing.T) {
	e := startEcho(t, 0x20)
	p := newProxy(t, e.addr())
	c := dial(t, p)
	msg := []byte("hello, imago")
	got, err := roundTrip(c, msg, 2*time.Second)
	if err != nil || !bytes.Equal(got, xor(msg, 0x20)) {
		t.Fatalf("round trip: %q %v", got, err)
	}
}

func TestBlackholeBothAndHeal(t *testing.T) {
	e := startEcho(t, 0x20)
	p := newProxy(t, e.addr())
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("warm"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	before := e.received.Load()
	p.Blackhole(Both)
	_, err := roundTrip(c, []byte("lost"), 200*time.Millisecond)
	if !isTimeout(err) {
		t.Fatalf("blackholed round trip: want a timeout, got %v", err)
	}
	if n := e.received.Load(); n != before {
		t.Fatalf("server received %d bytes through a blackhole", n-before)
	}
	// A new connection is accepted (no error on dial) but hears nothing either.
	c2 := dial(t, p)
	if _, err := roundTrip(c2, []byte("new"), 200*time.Millisecond); !isTimeout(err) {
		t.Fatalf("new connection under blackhole: want a timeout, got %v", err)
	}
	p.Heal()
	c3 := dial(t, p)
	msg := []byte("after heal")
	if got, err := roundTrip(c3, msg, 2*time.Second); err != nil || !bytes.Equal(got, xor(msg, 0x20)) {
		t.Fatalf("after heal: %q %v", got, err)
	}
}

// TestBlackholeOneWay: a forward blackhole keeps the server from hearing; a backward one lets
// the server hear and answer, but the answer never arrives.
func TestBlackholeOneWay(t *testing.T) {
	e := startEcho(t, 0x20)
	p := newProxy(t, e.addr())
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("warm"), 2*time.Second); err != nil {
		t.Fatal(err)
	}

	p.Blackhole(Forward)
	before := e.received.Load()
	if _, err := roundTrip(c, []byte("fwd"), 200*time.Millisecond); !isTimeout(err) {
		t.Fatalf("forward blackhole: want a timeout, got %v", err)
	}
	if n := e.received.Load() - before; n != 0 {
		t.Fatalf("forward blackhole: server received %d bytes", n)
	}

	p.Blackhole(Backward)
	c2 := dial(t, p)
	before = e.received.Load()
	if _, err := roundTrip(c2, []byte("back"), 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("backward blackhole: want a timeout, got %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for e.received.Load()-before != 4 {
		if time.Now().After(deadline) {
			t.Fatalf("backward blackhole: server received %d bytes, want 4", e.received.Load()-before)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDelayPerDirection(t *testing.T) {
	e := startEcho(t, 0x20)
	p := newProxy(t, e.addr())
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("warm"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		d    Direction
		want time.Duration
	}{{Forward, 150 * time.Millisecond}, {Backward, 150 * time.Millisecond}, {Both, 300 * time.Millisecond}} {
		p.Heal()
		p.SetDelay(tc.d, 150*time.Millisecond, 0)
		start := time.Now()
		if _, err := roundTrip(c, []byte("slow"), 3*time.Second); err != nil {
			t.Fatalf("%v: %v", tc.d, err)
		}
		if took := time.Since(start); took < tc.want {
			t.Errorf("delay %v: round trip took %v, want at least %v", tc.d, took, tc.want)
		}
	}
	p.Heal()
	start := time.Now()
	if _, err := roundTrip(c, []byte("fast"), 3*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= 150*time.Millisecond {
		t.Errorf("after heal the round trip still took %v", took)
	}
}

// TestJitterKeepsOrder: with a jitter larger than the gap between writes, chunks still arrive
// in the order they were sent.
func TestJitterKeepsOrder(t *testing.T) {
	e := startEcho(t, 0)
	p := newProxy(t, e.addr())
	p.SetDelay(Both, 5*time.Millisecond, 30*time.Millisecond)
	c := dial(t, p)
	var sent []byte
	for i := 0; i < 50; i++ {
		b := []byte{byte(i)}
		sent = append(sent, b...)
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // separate reads on the proxy, so chunks get different delays
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(sent))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatalf("order lost under jitter:\n got %v\nwant %v", got, sent)
	}
}

func TestDropConnections(t *testing.T) {
	e := startEcho(t, 0x20)
	p := newProxy(t, e.addr())
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("warm"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.DropConnections(); n != 1 {
		t.Fatalf("dropped %d connections, want 1", n)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("read on a dropped connection: want EOF or reset, got %v", err)
	}
	// New connections still work.
	c2 := dial(t, p)
	if _, err := roundTrip(c2, []byte("again"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestRefuseNew(t *testing.T) {
	e := startEcho(t, 0x20)
	p := newProxy(t, e.addr())
	p.SetRefuse(true)
	c := dial(t, p)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("refused connection: want EOF or reset, got %v", err)
	}
	if p.Accepted() != 1 {
		t.Fatalf("accepted %d", p.Accepted())
	}
	p.SetRefuse(false)
	if _, err := roundTrip(dial(t, p), []byte("ok"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestTargetDownAndRetarget: with the target gone a connection is closed at once; after
// SetTarget new connections reach the new server, old ones stay with the old.
func TestTargetDownAndRetarget(t *testing.T) {
	a := startEcho(t, 0x01)
	b := startEcho(t, 0x02)
	p := newProxy(t, a.addr())
	old := dial(t, p)
	msg := []byte("x")
	if got, _ := roundTrip(old, msg, 2*time.Second); !bytes.Equal(got, xor(msg, 0x01)) {
		t.Fatalf("first server: %q", got)
	}
	p.SetTarget(b.addr())
	if got, _ := roundTrip(dial(t, p), msg, 2*time.Second); !bytes.Equal(got, xor(msg, 0x02)) {
		t.Fatalf("after SetTarget: %q", got)
	}
	if got, _ := roundTrip(old, msg, 2*time.Second); !bytes.Equal(got, xor(msg, 0x01)) {
		t.Fatalf("old connection moved: %q", got)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := ln.Addr().String()
	ln.Close()
	p.SetTarget(gone)
	c := dial(t, p)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("target down: want the connection closed, got %v", err)
	}
}

// TestCloseStopsEverything: Close returns promptly with a connection open and a long delay
// pending, and the client sees its connection closed.
func TestCloseStopsEverything(t *testing.T) {
	e := startEcho(t, 0x20)
	p, err := New(e.addr(), 1)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("warm"), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	p.SetDelay(Both, time.Hour, 0)
	if _, err := c.Write([]byte("stuck")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // let the proxy read the chunk and start its hour-long wait
	start := time.Now()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Close took %v", took)
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("after Close: want the connection closed, got %v", err)
	}
	if _, err := net.DialTimeout("tcp", p.Addr(), time.Second); err == nil {
		t.Fatal("the proxy still accepts after Close")
	}
}
