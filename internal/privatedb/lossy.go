package privatedb

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// LossyProxy loses the answer of one command on the wire: a server that ran a COMMIT (or a
// PREPARE) whose answer never reached the client, the connection cut in between, is a fault no
// real server produces on demand. The proxy sits between a client's pool and a server (shared
// or private); armed with a marker, it forwards the client's next command that holds the
// marker, drops everything the server answers from then on, runs the test's then (which waits
// until the server shows the command's effect, or kills the server), and cuts both
// connections. The servers and what they run are real.
type LossyProxy struct {
	t      testing.TB
	target string
	ln     net.Listener
	marker atomic.Pointer[[]byte] // armed: the next command holding it loses its answer
	then   func()
	// Fatal (PostgreSQL only): instead of nothing, the client gets the server's answer up to
	// its ReadyForQuery, which is replaced by the FATAL error PostgreSQL sends to a session
	// that pg_terminate_backend ends (SQLSTATE 57P01) just after the command ran, before the
	// Sync of its pipeline: the moment of a real termination cannot be chosen.
	Fatal bool
	// Unsent: the command itself is not forwarded either: the connection dies after the
	// client sent it, before it reached the server (then, if set, runs before the cut).
	Unsent bool
	cuts   atomic.Int32
}

// pgTerminated is PostgreSQL's ErrorResponse to a session ended by pg_terminate_backend.
func pgTerminated() []byte {
	var body []byte
	for _, f := range []string{"SFATAL", "VFATAL", "C57P01", "Mterminating connection due to administrator command"} {
		body = append(append(body, f...), 0)
	}
	body = append(body, 0)
	n := len(body) + 4
	return append([]byte{'E', byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

// NewLossyProxy listens on 127.0.0.1 and forwards every connection to target (host:port). It
// stops when the test ends.
func NewLossyProxy(t testing.TB, target string) *LossyProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &LossyProxy{t: t, target: target, ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); p.serve(c) }()
		}
	}()
	return p
}

// Addr is the proxy's address, for the client's DSN.
func (p *LossyProxy) Addr() string { return p.ln.Addr().String() }

// Cuts is the number of answers lost so far.
func (p *LossyProxy) Cuts() int { return int(p.cuts.Load()) }

// Arm makes the next command holding marker lose its answer. then runs once the command was
// sent to the server, before the connection is cut (on the proxy's goroutine; not in Fatal
// mode).
func (p *LossyProxy) Arm(marker string, then func()) {
	p.then = then
	m := []byte(marker)
	p.marker.Store(&m)
}

// Until is a then for Arm: it waits (up to 10 s) until done reports that the server ran the
// command.
func Until(done func() bool) func() {
	return func() {
		deadline := time.Now().Add(10 * time.Second)
		for !done() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func (p *LossyProxy) serve(client net.Conn) {
	defer client.Close()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer server.Close()
	var drop atomic.Bool
	answered := make(chan struct{}) // the server's answer, cut, reached the client (Fatal)
	go func() {
		buf := make([]byte, 32<<10)
		var held []byte
		for {
			n, err := server.Read(buf)
			if n > 0 && drop.Load() && p.Fatal {
				held = append(held, buf[:n]...)
				if k := len(held) - 6; k >= 0 && held[k] == 'Z' && bytes.Equal(held[k+1:k+5], []byte{0, 0, 0, 5}) {
					client.Write(append(held[:k:k], pgTerminated()...))
					client.Close()
					close(answered)
					return
				}
			}
			if n > 0 && !drop.Load() {
				if _, werr := client.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				client.Close()
				return
			}
		}
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if n > 0 {
			if m := p.marker.Load(); m != nil && bytes.Contains(buf[:n], *m) && p.marker.CompareAndSwap(m, nil) {
				drop.Store(true)
				p.cuts.Add(1)
				if !p.Unsent {
					server.Write(buf[:n])
				}
				if p.Fatal {
					select {
					case <-answered:
					case <-time.After(10 * time.Second):
					}
					return
				}
				if p.then != nil {
					p.then()
				}
				return // both connections close: the answer is lost
			}
			if _, werr := server.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			server.(*net.TCPConn).CloseWrite()
			return
		}
	}
}
