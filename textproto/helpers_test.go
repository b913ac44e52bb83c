package textproto

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// memOffsets is an in-memory OffsetStore: a test double of this package's own interface.
type memOffsets struct {
	mu   sync.Mutex
	offs map[string]GroupOffset
}

func newMemOffsets() *memOffsets { return &memOffsets{offs: map[string]GroupOffset{}} }

func (m *memOffsets) CommitOffset(_ context.Context, group, topic string, partition int, next int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := group + "\x00" + topic + "\x00" + strconv.Itoa(partition)
	if o, ok := m.offs[k]; ok && o.Next > next {
		return nil // never backwards
	}
	m.offs[k] = GroupOffset{Group: group, Topic: topic, Partition: partition, Next: next}
	return nil
}

func (m *memOffsets) GroupOffsets(context.Context) ([]GroupOffset, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]GroupOffset, 0, len(m.offs))
	for _, o := range m.offs {
		out = append(out, o)
	}
	return out, nil
}

// testServer is a real broker on a temporary directory behind a real listener on 127.0.0.1:0.
type testServer struct {
	t       testing.TB
	b       *broker.Broker
	s       *Server
	addr    string
	offsets *memOffsets
	served  chan error
}

func startServer(t testing.TB, opts Options) *testServer {
	t.Helper()
	bo := broker.NewOptions(t.TempDir())
	bo.Logger = quietLogger()
	fs := &FsyncStats{}
	bo.Observer = fs
	b, err := broker.Open(bo)
	if err != nil {
		t.Fatalf("open broker: %v", err)
	}
	ts := &testServer{t: t, b: b, offsets: newMemOffsets(), served: make(chan error, 1)}
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	if opts.Offsets == nil {
		opts.Offsets = ts.offsets
	}
	opts.FsyncP99 = fs.P99
	if opts.Version == "" {
		opts.Version = "1.2.3-test"
	}
	s, err := New(b, opts)
	if err != nil {
		b.Close()
		t.Fatalf("new server: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Close()
		t.Fatalf("listen: %v", err)
	}
	ts.s, ts.addr = s, ln.Addr().String()
	go func() { ts.served <- s.Serve(ln) }()
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) stop() {
	if ts.s == nil {
		return
	}
	if err := ts.s.Close(); err != nil {
		ts.t.Errorf("close server: %v", err)
	}
	if err := <-ts.served; !errors.Is(err, ErrServerClosed) {
		ts.t.Errorf("Serve returned %v, want ErrServerClosed", err)
	}
	if err := ts.b.Close(); err != nil {
		ts.t.Errorf("close broker: %v", err)
	}
	ts.s = nil
}

func (ts *testServer) createTopic(name string, partitions int) {
	ts.t.Helper()
	if _, err := ts.b.CreateTopic(name, broker.TopicConfig{Partitions: partitions}); err != nil {
		ts.t.Fatalf("create topic %s: %v", name, err)
	}
}

// client is a raw TCP client of the door.
type client struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func (ts *testServer) dial() *client {
	ts.t.Helper()
	nc, err := net.DialTimeout("tcp", ts.addr, 5*time.Second)
	if err != nil {
		ts.t.Fatalf("dial: %v", err)
	}
	c := &client{t: ts.t, nc: nc, br: bufio.NewReader(nc)}
	ts.t.Cleanup(func() { nc.Close() })
	return c
}

func (c *client) write(s string) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// answer is one parsed answer.
type answer struct {
	kind   string // "result" or "value"
	code   int    // result only
	opaque int64
	body   []byte
}

func (a answer) String() string {
	if a.kind == "value" {
		return fmt.Sprintf("value %d %d", len(a.body), a.opaque)
	}
	return fmt.Sprintf("result %d %d %q", a.code, a.opaque, a.body)
}

// readAnswer reads one answer; it fails the test on a malformed one.
func (c *client) readAnswer() answer {
	c.t.Helper()
	a, err := c.tryRead()
	if err != nil {
		c.t.Fatalf("read answer: %v", err)
	}
	return a
}

func (c *client) tryRead() (answer, error) {
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := c.br.ReadString('\n')
	if err != nil {
		return answer{}, err
	}
	w := strings.Fields(line)
	var a answer
	var n int
	switch {
	case len(w) == 4 && w[0] == "result":
		a.kind = "result"
		a.code, _ = strconv.Atoi(w[1])
		n, _ = strconv.Atoi(w[2])
		a.opaque, _ = strconv.ParseInt(w[3], 10, 64)
	case len(w) == 3 && w[0] == "value":
		a.kind = "value"
		n, _ = strconv.Atoi(w[1])
		a.opaque, _ = strconv.ParseInt(w[2], 10, 64)
	default:
		return a, fmt.Errorf("malformed answer line %q", line)
	}
	a.body = make([]byte, n+2)
	if _, err := io.ReadFull(c.br, a.body); err != nil {
		return a, err
	}
	if string(a.body[n:]) != "\r\n" {
		return a, fmt.Errorf("answer %q: no \\r\\n after the body", line)
	}
	a.body = a.body[:n]
	return a, nil
}

// call writes a request and reads its answer.
func (c *client) call(req string) answer {
	c.t.Helper()
	c.write(req)
	return c.readAnswer()
}

// expect calls and checks the code and opaque, returning the body.
func (c *client) expect(req string, code int) string {
	c.t.Helper()
	a := c.call(req)
	if a.kind != "result" || a.code != code {
		c.t.Fatalf("%q: got %v, want result %d", req, a, code)
	}
	return string(a.body)
}

// expectClosed checks that the server closed the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := c.br.ReadByte()
	if err == nil {
		c.t.Fatalf("connection still open: read %q", b)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open after 5s")
	}
}

func putLine(topic string, partition int, payload string, flag int, opaque int64) string {
	return fmt.Sprintf("put %s %d %d %d %d\r\n%s", topic, partition, len(payload), flag, opaque, payload)
}
