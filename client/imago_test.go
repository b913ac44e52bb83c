package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"sync"
	"testing"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/gateway"
)

// imagoURL is the address of a real server (broker and gateway in this process) that the
// Example functions and tests without special needs share; TestMain starts it.
var imagoURL string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "imago-client-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s, err := openImago(dir, gateway.Options{AutoCreateTopics: true, DefaultPartitions: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	imagoURL = s.URL
	code := m.Run()
	if err := s.close(); err != nil {
		fmt.Fprintln(os.Stderr, "close server:", err)
		code = 1
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// imagoServer is a real broker on a directory served by the real gateway over httptest: the
// same code as `imago serve`, in-process (cmd/imago's child-process helpers cannot be
// imported here).
type imagoServer struct {
	URL  string
	dir  string
	b    *broker.Broker
	g    *gateway.Server
	hs   *httptest.Server
	once sync.Once
	err  error
}

func openImago(dir string, opts gateway.Options, tune ...func(*broker.Options)) (*imagoServer, error) {
	bo := broker.NewOptions(dir)
	bo.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, f := range tune {
		f(&bo)
	}
	b, err := broker.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("open broker: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = bo.Logger
	}
	g, err := gateway.New(b, opts)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("new gateway: %w", err)
	}
	hs := httptest.NewServer(g.Handler())
	return &imagoServer{URL: hs.URL, dir: dir, b: b, g: g, hs: hs}, nil
}

// startImago starts a server of the test's own on dir (t.TempDir() when empty), stopped with
// the test; tune changes the broker's options.
func startImago(t testing.TB, dir string, opts gateway.Options, tune ...func(*broker.Options)) *imagoServer {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := openImago(dir, opts, tune...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return s
}

// close stops the HTTP server, the gateway and the broker; safe to call twice.
func (s *imagoServer) close() error {
	s.once.Do(func() {
		s.hs.CloseClientConnections()
		s.hs.Close()
		s.g.Close()
		s.err = s.b.Close()
	})
	return s.err
}

// uniqueTopic returns a topic name no other test of this run uses.
var topicSeq struct {
	sync.Mutex
	n int
}

func uniqueTopic(prefix string) string {
	topicSeq.Lock()
	defer topicSeq.Unlock()
	topicSeq.n++
	return fmt.Sprintf("%s-%d", prefix, topicSeq.n)
}

// background is a context for tests: bounded, so that a hang fails instead of stalling.
func background(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60e9)
	t.Cleanup(cancel)
	return ctx
}
