package textproto

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultListener is a fault-injection fake: a real listener whose Accept first returns the
// given errors, one a call, shaped as the net package returns them; then it accepts for real.
type faultListener struct {
	net.Listener
	mu       sync.Mutex
	errs     []error
	calls    int
	injected chan struct{} // closed when every error has been returned
}

func newFaultListener(t *testing.T, errs ...syscall.Errno) *faultListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	fl := &faultListener{Listener: ln, injected: make(chan struct{})}
	for _, e := range errs {
		fl.errs = append(fl.errs, &net.OpError{Op: "accept", Net: "tcp", Addr: ln.Addr(), Err: os.NewSyscallError("accept4", e)})
	}
	return fl
}

func (fl *faultListener) Accept() (net.Conn, error) {
	fl.mu.Lock()
	fl.calls++
	if len(fl.errs) > 0 {
		err := fl.errs[0]
		fl.errs = fl.errs[1:]
		if len(fl.errs) == 0 {
			close(fl.injected)
		}
		fl.mu.Unlock()
		return nil, err
	}
	fl.mu.Unlock()
	return fl.Listener.Accept()
}

// TestAcceptRetriesTemporaryErrors: running out of descriptors or memory, or a connection
// aborted before it was accepted, does not stop the door: Serve retries with a backoff. A
// permanent error ends Serve with that error.
func TestAcceptRetriesTemporaryErrors(t *testing.T) {
	ts := startServer(t, Options{})
	fl := newFaultListener(t, syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.ENOBUFS, syscall.ECONNABORTED, syscall.EPROTO)
	served := make(chan error, 1)
	go func() { served <- ts.s.Serve(fl) }()
	select {
	case err := <-served:
		t.Fatalf("Serve returned on a temporary accept error: %v", err)
	case <-fl.injected:
	}
	// The next Accept is a real one: a client is served.
	nc, err := net.DialTimeout("tcp", fl.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	c := &client{t: t, nc: nc, br: bufio.NewReader(nc)}
	c.expect("version 1\r\n", 200)

	// A permanent error (here EBADF) ends Serve, after the temporary one before it.
	bad := newFaultListener(t, syscall.ENFILE, syscall.EBADF)
	go func() { served <- ts.s.Serve(bad) }()
	select {
	case err := <-served:
		if !errors.Is(err, syscall.EBADF) {
			t.Fatalf("Serve returned %v, want EBADF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("Serve did not return on a permanent accept error")
	}
	bad.mu.Lock()
	calls := bad.calls
	bad.mu.Unlock()
	if calls != 2 {
		t.Fatalf("Accept called %d times, want 2", calls)
	}
	// The server's other listeners go on.
	ts.dial().expect("version 2\r\n", 200)
}
