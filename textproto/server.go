package textproto

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/auth"
)

// ErrServerClosed is returned by Serve and ListenAndServe after Close.
var ErrServerClosed = errors.New("textproto: server closed")

// Server is the text protocol door over one broker. It may serve several listeners.
type Server struct {
	b       *broker.Broker
	opts    Options
	log     *slog.Logger
	auth    *auth.Set // nil: auth is off
	started time.Time
	pid     int

	// ctx is given to broker calls; it ends after the last connection finished.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   bool
	addr      net.Addr
	wg        sync.WaitGroup // accept loops, connections, refusals
	closed    atomic.Bool

	stats counters
	txs   txTracker
}

// New builds a server over b. It does not listen: call Serve or ListenAndServe.
func New(b *broker.Broker, opts Options) (*Server, error) {
	if b == nil {
		return nil, errors.New("textproto: the broker is nil")
	}
	opts = opts.withDefaults()
	tokens, err := auth.NewSet(opts.Tokens)
	if err != nil {
		return nil, fmt.Errorf("textproto: %w", err)
	}
	opts.Tokens = nil // the set holds digests; do not keep secrets around
	s := &Server{
		b:         b,
		opts:      opts,
		log:       opts.Logger,
		auth:      tokens,
		started:   time.Now(),
		pid:       os.Getpid(),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*conn]struct{}{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.txs.open = map[string]*trackedTx{}
	return s, nil
}

// ListenAndServe listens on Options.Addr and serves until Close.
func (s *Server) ListenAndServe() error {
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("textproto: listen on %s: %w", s.opts.Addr, err)
	}
	return s.Serve(ln)
}

// Addr is the address of the last listener given to Serve, or Options.Addr before that.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.addr != nil {
		return s.addr.String()
	}
	return s.opts.Addr
}

// Serve accepts connections on ln until Close, which closes ln. Temporary accept errors
// (temporaryAccept: out of descriptors or memory, an aborted connection) are retried with a
// backoff of up to a second. It returns ErrServerClosed after Close, or the permanent error
// that stopped accepting on ln, which the caller should treat as the door being down.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.addr = ln.Addr()
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	s.log.Info("text protocol listening", "addr", ln.Addr().String(), "auth", s.auth != nil)
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closed.Load() {
				return ErrServerClosed
			}
			if temporaryAccept(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("text protocol accept failed; retrying", "addr", ln.Addr().String(), "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			s.log.Error("text protocol accept failed; no longer accepting on this listener", "addr", ln.Addr().String(), "err", err)
			return fmt.Errorf("textproto: accept: %w", err)
		}
		backoff = 0
		s.accepted(nc)
	}
}

// retryAccept are the accept errors that pass: a shortage of descriptors, memory or buffers,
// and the errors of a connection that failed before it was accepted (accept(2) asks to
// retry those like EAGAIN).
var retryAccept = []error{
	syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM, syscall.ENOBUFS,
	syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN,
	syscall.EPROTO, syscall.ENOPROTOOPT, syscall.ENETDOWN, syscall.ENETUNREACH,
	syscall.EHOSTDOWN, syscall.EHOSTUNREACH, syscall.EOPNOTSUPP, syscall.ETIMEDOUT,
}

// temporaryAccept reports whether Serve retries an accept error (with a backoff, as net/http
// does): a timeout, an error of retryAccept, or one that says it is temporary.
func temporaryAccept(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range retryAccept {
		if errors.Is(err, e) {
			return true
		}
	}
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// accepted registers nc and starts its goroutines, or refuses it over the limit.
func (s *Server) accepted(nc net.Conn) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if len(s.conns) >= s.opts.MaxConnections {
		s.wg.Add(1)
		s.mu.Unlock()
		s.stats.rejected.Add(1)
		s.log.Warn("connection refused: too many connections", "remote", nc.RemoteAddr().String(), "max", s.opts.MaxConnections)
		go s.refuse(nc)
		return
	}
	c := newConn(s, nc)
	s.conns[c] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()
	s.stats.currConns.Add(1)
	s.stats.totalConns.Add(1)
	go c.writeLoop()
	go c.readLoop()
}

// refuse answers a connection over the limit and closes it. The deadline bounds reads too:
// over TLS (protocol.tls) the write first reads the client's hello, and a client that sends
// none must not hold the connection, this goroutine and Close without end.
func (s *Server) refuse(nc net.Conn) {
	defer s.wg.Done()
	nc.SetDeadline(time.Now().Add(time.Second))
	msg := fmt.Sprintf("too many connections (the limit is %d); retry later or raise the limit", s.opts.MaxConnections)
	nc.Write(appendResult(nil, codeUnavailable, 0, msg))
	lingerClose(nc)
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.stats.currConns.Add(-1)
}

// Close stops accepting, lets every command being executed finish and answer, closes every
// connection (those idle at once) and waits for their goroutines. The answers still queued
// for a connection get WriteTimeout in all to be written, so a client that reads slowly does
// not hold Close. It does not close the broker. It is safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closing = true
	s.closed.Store(true)
	var first error
	for ln := range s.listeners {
		// A listener its owner closed first (its Serve had yet to notice) is no error.
		if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) && first == nil {
			first = err
		}
	}
	for c := range s.conns {
		c.stop()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.cancel()
	s.log.Info("text protocol closed")
	return first
}

// Broker returns the broker the server serves.
func (s *Server) Broker() *broker.Broker { return s.b }
