package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
	pb "go.etcd.io/raft/v3/raftpb"
)

type tcpMember struct {
	id      uint64
	dir     string
	log     *MemLog
	app     *recorder
	tr      *Transport
	node    *Node
	stopped bool
}

func (m *tcpMember) start(t *testing.T, ln net.Listener, addrs map[uint64]string) {
	t.Helper()
	tr, err := NewTransport(TransportConfig{ID: m.id, Listener: ln, Peers: addrs, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := OpenStorage(m.dir, m.log)
	if err != nil {
		t.Fatal(err)
	}
	m.app = &recorder{}
	n, err := NewNode(Config{
		ID: m.id, Peers: []uint64{1, 2, 3}, Storage: st, Applier: m.app, Sender: tr,
		TickInterval: 10 * time.Millisecond, Logger: quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.tr, m.node, m.stopped = tr, n, false
	tr.Start(context.Background(), n)
	n.Start(context.Background())
}

func (m *tcpMember) stop() {
	if m.stopped {
		return
	}
	m.node.Stop()
	m.tr.Stop()
	m.stopped = true
}

func TestTransportThreeNodesOnLoopbackSurviveLeaderStop(t *testing.T) {
	lns := map[uint64]net.Listener{}
	addrs := map[uint64]string{}
	for id := uint64(1); id <= 3; id++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[id], addrs[id] = ln, ln.Addr().String()
	}
	members := map[uint64]*tcpMember{}
	for id := uint64(1); id <= 3; id++ {
		members[id] = &tcpMember{id: id, dir: t.TempDir(), log: NewMemLog()}
		members[id].start(t, lns[id], addrs)
	}
	t.Cleanup(func() {
		for _, m := range members {
			m.stop()
		}
	})
	leader := func(except uint64) *tcpMember {
		t.Helper()
		var l *tcpMember
		waitFor(t, "a serving leader", func() bool {
			for id, m := range members {
				if id != except && !m.stopped && m.node.Status().Serving {
					l = m
					return true
				}
			}
			return false
		})
		return l
	}
	ctx := context.Background()
	l := leader(0)
	for i := 0; i < 50; i++ {
		if err := l.node.Propose(ctx, []byte(fmt.Sprintf("a%d", i))); err != nil {
			t.Fatalf("propose a%d: %v", i, err)
		}
	}
	want := l.log.LastIndex()
	for _, m := range members {
		waitFor(t, fmt.Sprintf("node %d to apply index %d", m.id, want), func() bool {
			return m.node.Status().Applied >= want
		})
	}

	// Stop the leader: the other two elect a new one and commit.
	l.stop()
	l2 := leader(l.id)
	for i := 0; i < 20; i++ {
		if err := l2.node.Propose(ctx, []byte(fmt.Sprintf("b%d", i))); err != nil {
			t.Fatalf("propose b%d on the new leader: %v", i, err)
		}
	}

	// Restart the old leader on its address and storage (losing whatever it had not synced):
	// it catches up with the group.
	l.log.Crash()
	ln, err := net.Listen("tcp", addrs[l.id])
	if err != nil {
		t.Fatalf("relisten on %s: %v", addrs[l.id], err)
	}
	l.start(t, ln, addrs)
	want = l2.log.LastIndex()
	waitFor(t, "restarted node to catch up", func() bool { return l.node.Status().Applied >= want })
	ref := l2.app.entries()
	got := l.app.entries()
	for i := range ref {
		if i >= len(got) || got[i].Index != ref[i].Index || string(got[i].Data) != string(ref[i].Data) {
			t.Fatalf("restarted node applied a different sequence at position %d", i)
		}
	}
}

func TestTransportRefusesConnectionMeantForAnotherNode(t *testing.T) {
	tr, err := NewTransport(TransportConfig{ID: 1, Listen: "127.0.0.1:0", Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h := &countingHandler{stepped: make(chan *pb.Message, 1)}
	tr.Start(context.Background(), h)
	defer tr.Stop()
	c, err := net.Dial("tcp", tr.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hello := append([]byte(helloMagic), 1)
	hello = binary.BigEndian.AppendUint64(hello, 2)
	hello = binary.BigEndian.AppendUint64(hello, 3) // meant for node 3
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("connection with a hello for node 3 not closed by node 1: %v", err)
	}
	if got := tr.RefusedConnections(); got["hello"] != 1 {
		t.Fatalf("refused connections counted %v, want hello=1", got)
	}
}

// failingListener fails its first fails accepts as a listener out of file descriptors does,
// then accepts.
type failingListener struct {
	net.Listener
	fails atomic.Int64
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestTransportAcceptRetriesAndLogsOnce: accepts that fail while the listener is open (out of
// file descriptors) do not end the transport's listening, and are logged once, not once each.
func TestTransportAcceptRetriesAndLogsOnce(t *testing.T) {
	const fails = 6
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &failingListener{Listener: inner}
	ln.fails.Store(fails)
	var logged testenv.SyncBuffer
	n1, h1 := startTransport(t, TransportConfig{ID: 1, Listener: ln, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	n2, _ := startTransport(t, TransportConfig{ID: 2, Peers: map[uint64]string{1: n1.Addr()}})
	n2.Send([]*pb.Message{{Type: pb.MsgHeartbeat.Enum(), To: new(uint64(1)), From: new(uint64(2))}})
	stepped(t, h1, "node 2's message after the failed accepts")
	if n := ln.fails.Load(); n >= 0 {
		t.Fatalf("%d failures left, yet a connection was accepted", n+1)
	}
	if lines := warnLines(logged.String(), "raft transport: accept"); len(lines) != 1 || !strings.Contains(lines[0], "too many open files") {
		t.Fatalf("%d failed accepts logged %d WARN lines, want 1 with the error:\n%s", fails, len(lines), logged.String())
	}
}

type countingHandler struct {
	stepped     chan *pb.Message
	unreachable int
}

func (h *countingHandler) Step(m *pb.Message)       { h.stepped <- m }
func (h *countingHandler) ReportUnreachable(uint64) { h.unreachable++ }

func TestTransportSendDropsWhenPeerQueueIsFull(t *testing.T) {
	// Node 2's address accepts nothing: the writer never drains the queue.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := dead.Addr().String()
	dead.Close()
	tr, err := NewTransport(TransportConfig{ID: 1, Listen: "127.0.0.1:0", Peers: map[uint64]string{2: addr}, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h := &countingHandler{stepped: make(chan *pb.Message, 1)}
	// Not started: no writer drains the queue, and Send must still return at once.
	tr.handler = h
	msgs := make([]*pb.Message, peerQueue+10)
	for i := range msgs {
		msgs[i] = &pb.Message{Type: pb.MsgHeartbeat.Enum(), To: new(uint64(2)), From: new(uint64(1))}
	}
	done := make(chan struct{})
	go func() { tr.Send(msgs); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Send blocked on a full peer queue")
	}
	if got := tr.Dropped.Load(); got != 10 {
		t.Fatalf("dropped %d messages, want 10", got)
	}
	if h.unreachable != 10 {
		t.Fatalf("peer reported unreachable %d times, want 10", h.unreachable)
	}
	tr.Stop()
}
