package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/imagomq/imago/internal/config"
)

// startDebug serves Go's profiler (net/http/pprof) on addr, for an operator chasing CPU or
// memory: go tool pprof http://127.0.0.1:6060/debug/pprof/profile?seconds=10. The profiler
// shows internals and costs CPU on demand, so it has no token check and is refused on any
// address but loopback, with or without auth configured. It stops at shutdown.
func (s *server) startDebug(addr string) error {
	if addr == "" {
		return nil
	}
	if !config.IsLoopback(addr) {
		return &usageError{fmt.Errorf("--pprof-addr %s: the profiler listens on loopback only (127.0.0.1, ::1, localhost)", addr)}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on --pprof-addr %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Warn("pprof listener stopped", "err", err)
		}
	}()
	s.logger.Info("pprof listening", "addr", "http://"+ln.Addr().String()+"/debug/pprof/")
	s.onClose("pprof", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		if err != nil {
			err = srv.Close()
		}
		<-done
		return err
	})
	return nil
}
