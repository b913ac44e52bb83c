package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/internal/testenv"
)

// brokenListener is a fault-injection fake: a real listener whose Accept fails with a
// permanent error (EBADF, shaped as the net package returns it) once broken is closed.
type brokenListener struct {
	net.Listener
	broken chan struct{}
}

func (l *brokenListener) Accept() (net.Conn, error) {
	<-l.broken
	return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EBADF)}
}

// TestProtocolAcceptFailureStopsServer: when the text protocol stops accepting connections
// for good while the server runs, the failure is logged at Error and the server shuts down
// with an error (exit non-zero), rather than serving HTTP alone with the text port dead.
func TestProtocolAcceptFailureStopsServer(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Protocol.Addr = "127.0.0.1:0"
	var logs testenv.SyncBuffer
	broken := make(chan struct{})
	s := &server{cfg: cfg, logger: slog.New(slog.NewTextHandler(&logs, nil)),
		listenProtocol: func(addr string) (net.Listener, error) {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return nil, err
			}
			return &brokenListener{Listener: ln, broken: broken}, nil
		}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.start(ctx); err != nil {
		t.Fatalf("start: %v", errors.Join(err, s.closeAll()))
	}
	served := make(chan error, 1)
	go func() { served <- s.serve(ctx, "") }()
	close(broken)
	select {
	case err := <-served:
		if err == nil || !strings.Contains(err.Error(), "text protocol") || !errors.Is(err, syscall.EBADF) {
			t.Fatalf("serve returned %v, want the text protocol's accept error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("serve goes on with the text protocol down")
	}
	if l := logs.String(); !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "text protocol stopped accepting") {
		t.Fatalf("no Error log of the failure:\n%s", l)
	}
}
