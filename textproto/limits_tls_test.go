package textproto

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
)

// A connection over the limit on a TLS listener (protocol.tls) whose client never sends its
// hello is refused within a bound: the refusal's handshake must not wait for the client
// without a deadline, holding a goroutine and the connection, and Close with them.
func TestConnectionLimitOverTLSSilentClient(t *testing.T) {
	ts := startServer(t, Options{MaxConnections: 1})
	ca := testenv.NewCA(t, "textproto test CA")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tln := tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "door", "127.0.0.1")}, MinVersion: tls.VersionTLS12})
	served := make(chan error, 1)
	go func() { served <- ts.s.Serve(tln) }()

	// The one connection allowed, on the plain listener.
	a := ts.dial()
	a.expect("version 1\r\n", 200)

	// Over the limit, on the TLS listener: says nothing.
	silent, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	deadline := time.Now().Add(5 * time.Second)
	for ts.s.stats.rejected.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("rejected = %d, want 1", ts.s.stats.rejected.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}

	closed := make(chan error, 1)
	go func() { closed <- ts.s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Close still waits 5 s after it began: the refusal of the silent TLS client has no deadline")
		silent.Close() // lets the refusal end, and Close with it
		<-closed
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve on the TLS listener returned %v, want ErrServerClosed", err)
	}
}
