package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// memberTLS is the PeerTLS of a member whose certificate ca signed for hosts.
func memberTLS(t *testing.T, ca *testenv.CA, name string, hosts ...string) *PeerTLS {
	t.Helper()
	p, err := NewPeerTLS(ca.Issue(t, name, hosts...), ca.Pool())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startTransport starts a transport on a loopback port and returns it with its handler; its
// log goes nowhere unless cfg has a Logger.
func startTransport(t *testing.T, cfg TransportConfig) (*Transport, *countingHandler) {
	t.Helper()
	cfg.Listen = "127.0.0.1:0"
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	tr, err := NewTransport(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &countingHandler{stepped: make(chan *pb.Message, 16)}
	tr.Start(context.Background(), h)
	t.Cleanup(tr.Stop)
	return tr, h
}

// stepped waits for the next message the handler receives.
func stepped(t *testing.T, h *countingHandler, what string) *pb.Message {
	t.Helper()
	select {
	case m := <-h.stepped:
		return m
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return nil
	}
}

// TestTransportTLSCarriesRaftFilesAndJoin: two members with certificates of one CA exchange raft
// messages both ways over mutual TLS, and the two dials outside the stream (a snapshot file copy
// and the join question) go over TLS too.
func TestTransportTLSCarriesRaftFilesAndJoin(t *testing.T) {
	ca := testenv.NewCA(t, "imago cluster CA")
	content := bytes.Repeat([]byte("snapshot"), 50_000)
	files := func(index uint64, name string) (io.ReadCloser, int64, error) {
		if index == 7 && name == "log/0.log" {
			return io.NopCloser(bytes.NewReader(content)), int64(len(content)), nil
		}
		return nil, 0, errors.New("no such file in snapshot")
	}
	join := func(_ context.Context, id uint64) JoinInfo {
		return JoinInfo{Leader: 1, Confirmed: true, Learner: id == 4}
	}
	tls1, tls2 := memberTLS(t, ca, "node1", "127.0.0.1"), memberTLS(t, ca, "node2", "localhost", "127.0.0.1")
	n1, h1 := startTransport(t, TransportConfig{ID: 1, Files: files, Join: join, TLS: tls1})
	n2, h2 := startTransport(t, TransportConfig{ID: 2, Peers: map[uint64]string{1: n1.Addr()}, TLS: tls2})
	n1.AddPeer(2, n2.Addr())

	n2.Send([]*pb.Message{{Type: pb.MsgHeartbeat.Enum(), To: new(uint64(1)), From: new(uint64(2))}})
	if m := stepped(t, h1, "node 2's heartbeat at node 1"); m.GetFrom() != 2 {
		t.Fatalf("node 1 got a message from %d", m.GetFrom())
	}
	n1.Send([]*pb.Message{{Type: pb.MsgHeartbeatResp.Enum(), To: new(uint64(2)), From: new(uint64(1))}})
	if m := stepped(t, h2, "node 1's answer at node 2"); m.GetFrom() != 1 || m.GetType() != pb.MsgHeartbeatResp {
		t.Fatalf("node 2 got %s from %d", m.GetType(), m.GetFrom())
	}

	var got bytes.Buffer
	if n, err := n2.FetchFile(context.Background(), 1, 7, "log/0.log", &got); err != nil || n != int64(len(content)) || !bytes.Equal(got.Bytes(), content) {
		t.Fatalf("snapshot file over TLS: %d bytes, err %v; want %d", n, err, len(content))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tls4 := memberTLS(t, ca, "node4", "127.0.0.1")
	if info, err := AskJoin(ctx, tls4, 4, 1, n1.Addr()); err != nil || !info.Confirmed || !info.Learner {
		t.Fatalf("join question over TLS: %+v, %v", info, err)
	}
	// A certificate with the DNS name localhost answers a dial to localhost as well.
	_, port, _ := net.SplitHostPort(n2.Addr())
	n1.AddPeer(2, net.JoinHostPort("localhost", port))
	n1.Send([]*pb.Message{{Type: pb.MsgHeartbeatResp.Enum(), To: new(uint64(2)), From: new(uint64(1))}})
	stepped(t, h2, "node 1's message dialled to localhost")
	if s := tls1.String(); !strings.Contains(s, "node1") || !strings.Contains(s, "redacted") {
		t.Fatalf("PeerTLS prints %q", s)
	}
}

// strangerHello is what a stranger sends on the raft port: the hello of node 2 to node 1 and a
// vote request of a high term (a message that would depose the leader).
func strangerHello(t *testing.T) []byte {
	t.Helper()
	b, err := proto.Marshal(&pb.Message{Type: pb.MsgVote.Enum(), To: new(uint64(1)), From: new(uint64(2)), Term: new(uint64(99))})
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(helloMagic), 1)
	out = binary.BigEndian.AppendUint64(out, 2)
	out = binary.BigEndian.AppendUint64(out, 1)
	out = binary.BigEndian.AppendUint32(out, uint32(len(b)))
	return append(out, b...)
}

// TestTransportTLSRefusesStrangers: a member with TLS admits nobody without a certificate of the
// cluster's CA: a plain TCP connection, a TLS client without a certificate and one whose
// certificate another CA signed are closed, and the vote each sends never reaches raft. A
// snapshot file is not served to them either, and a join question from a node without a member
// certificate goes unanswered.
func TestTransportTLSRefusesStrangers(t *testing.T) {
	ca, other := testenv.NewCA(t, "imago cluster CA"), testenv.NewCA(t, "someone else's CA")
	var served atomic.Int64
	files := func(uint64, string) (io.ReadCloser, int64, error) {
		served.Add(1)
		return io.NopCloser(strings.NewReader("secret")), 6, nil
	}
	var asked atomic.Int64
	join := func(context.Context, uint64) JoinInfo { asked.Add(1); return JoinInfo{Leader: 1, Confirmed: true} }
	n1, h1 := startTransport(t, TransportConfig{ID: 1, Files: files, Join: join, TLS: memberTLS(t, ca, "node1", "127.0.0.1")})

	dialTLS := func(certs ...tls.Certificate) func() (net.Conn, error) {
		return func() (net.Conn, error) {
			// The stranger trusts the member (the CA certificate is no secret); only its own
			// certificate is missing or wrong.
			return tls.Dial("tcp", n1.Addr(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", Certificates: certs})
		}
	}
	for _, tc := range []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"plain TCP", func() (net.Conn, error) { return net.Dial("tcp", n1.Addr()) }},
		{"TLS without a client certificate", dialTLS()},
		{"TLS with a certificate of another CA", dialTLS(other.Issue(t, "node2", "127.0.0.1"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.dial()
			if err != nil {
				// With TLS 1.3 the client's handshake ends before the member checks its
				// certificate: the refusal comes as the connection's end, below.
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			_, _ = c.Write(strangerHello(t))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.Copy(io.Discard, c)
			select {
			case m := <-h1.stepped:
				t.Fatalf("the stranger's %s (term %d) reached raft", m.GetType(), m.GetTerm())
			default:
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("the member kept the stranger's connection open")
			}
		})
	}

	// A transport without TLS, and one with a certificate of another CA, fetch no file.
	for name, peerTLS := range map[string]*PeerTLS{"no TLS": nil, "another CA": memberTLS(t, other, "node2", "127.0.0.1")} {
		n2, _ := startTransport(t, TransportConfig{ID: 2, Peers: map[uint64]string{1: n1.Addr()}, TLS: peerTLS})
		if _, err := n2.FetchFile(context.Background(), 1, 7, "log/0.log", io.Discard); err == nil {
			t.Errorf("%s: a snapshot file was fetched", name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if info, err := AskJoin(ctx, peerTLS, 4, 1, n1.Addr()); err == nil {
			t.Errorf("%s: the join question was answered: %+v", name, info)
		}
		cancel()
	}
	if served.Load() != 0 || asked.Load() != 0 {
		t.Fatalf("strangers were served %d files and %d join answers", served.Load(), asked.Load())
	}
}

// TestTransportTLSRefusalsLogOncePerHost: a stranger that connects again and again (a port
// scanner, an old member without a certificate) is refused each time and each refusal is
// counted, but the log holds one WARN line for its host, not one per connection.
func TestTransportTLSRefusalsLogOncePerHost(t *testing.T) {
	const conns = 50
	var logged testenv.SyncBuffer
	n1, h1 := startTransport(t, TransportConfig{ID: 1, TLS: memberTLS(t, testenv.NewCA(t, "imago cluster CA"), "node1", "127.0.0.1"),
		Logger: slog.New(slog.NewTextHandler(&logged, nil)), RefusalLogInterval: time.Hour})
	for range conns {
		c, err := net.Dial("tcp", n1.Addr())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(strangerHello(t)) // not a TLS client hello: the handshake fails
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.Copy(io.Discard, c) // until the member closes the connection
		c.Close()
	}
	// The member counts a refusal before it closes the connection, so the count is complete
	// already; waitFor only guards against a member that would count later.
	waitFor(t, fmt.Sprintf("%d refusals counted", conns), func() bool { return n1.RefusedConnections()["tls"] >= conns })
	if got := n1.RefusedConnections(); got["tls"] != conns || got["hello"]+got["not_member"]+got["frame"]+got["message"] != 0 {
		t.Fatalf("refused connections counted %v, want tls=%d and no other", got, conns)
	}
	select {
	case m := <-h1.stepped:
		t.Fatalf("the stranger's %s reached raft", m.GetType())
	default:
	}
	lines := warnLines(logged.String(), "raft transport: refused connection")
	if len(lines) != 1 {
		t.Fatalf("%d refused connections from one host logged %d WARN lines, want 1:\n%s", conns, len(lines), logged.String())
	}
	if !strings.Contains(lines[0], "reason=tls") || !strings.Contains(lines[0], "remote=127.0.0.1:") {
		t.Fatalf("the refusal's line is %q, want reason=tls and the remote address", lines[0])
	}
}

// TestTransportTLSDiallerVerifiesMember: a member dials only a listener whose certificate the
// cluster's CA signed for the host it dials; a certificate for another host, or from another CA,
// gets no message and no file request.
func TestTransportTLSDiallerVerifiesMember(t *testing.T) {
	ca, other := testenv.NewCA(t, "imago cluster CA"), testenv.NewCA(t, "someone else's CA")
	for name, listener := range map[string]*PeerTLS{
		"certificate for another host": memberTLS(t, ca, "node1", "10.9.9.9", "node1.example"),
		"certificate of another CA":    memberTLS(t, other, "node1", "127.0.0.1"),
	} {
		t.Run(name, func(t *testing.T) {
			var served atomic.Int64
			files := func(uint64, string) (io.ReadCloser, int64, error) {
				served.Add(1)
				return io.NopCloser(strings.NewReader("x")), 1, nil
			}
			n1, _ := startTransport(t, TransportConfig{ID: 1, Files: files, TLS: listener})
			n2, _ := startTransport(t, TransportConfig{ID: 2, Peers: map[uint64]string{1: n1.Addr()}, TLS: memberTLS(t, ca, "node2", "127.0.0.1")})
			_, err := n2.FetchFile(context.Background(), 1, 7, "log/0.log", io.Discard)
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Fatalf("fetch from an unverified listener: %v", err)
			}
			if served.Load() != 0 {
				t.Fatal("the request reached the unverified listener")
			}
		})
	}
}

// TestTransportTLSIntermediateCA: member certificates issued by an intermediate CA (the chain
// in each member's certificate file, the root as the cluster's CA), as a PKI usually hands them
// out, are accepted both ways.
func TestTransportTLSIntermediateCA(t *testing.T) {
	root := testenv.NewCA(t, "imago root CA")
	issuing := root.Intermediate(t, "imago issuing CA")
	member := func(name string) *PeerTLS {
		p, err := NewPeerTLS(issuing.Issue(t, name, "127.0.0.1"), root.Pool())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	n1, h1 := startTransport(t, TransportConfig{ID: 1, TLS: member("node1")})
	n2, h2 := startTransport(t, TransportConfig{ID: 2, Peers: map[uint64]string{1: n1.Addr()}, TLS: member("node2")})
	n1.AddPeer(2, n2.Addr())
	n2.Send([]*pb.Message{{Type: pb.MsgHeartbeat.Enum(), To: new(uint64(1)), From: new(uint64(2))}})
	if m := stepped(t, h1, "node 2's heartbeat at node 1"); m.GetFrom() != 2 {
		t.Fatalf("node 1 got a message from %d", m.GetFrom())
	}
	n1.Send([]*pb.Message{{Type: pb.MsgHeartbeatResp.Enum(), To: new(uint64(2)), From: new(uint64(1))}})
	if m := stepped(t, h2, "node 1's answer at node 2"); m.GetFrom() != 1 {
		t.Fatalf("node 2 got a message from %d", m.GetFrom())
	}
}

// TestTransportTLSBindsCertificateToMember: over TLS a raft stream is taken only from a
// certificate that names the host of the raft address this member has for the id the stream
// says it comes from. Another member's certificate speaking as node 2, and a stream from an id
// this member does not know, are refused and reach no raft; node 2's own certificate is heard,
// and a join question from a node not known yet is still answered.
func TestTransportTLSBindsCertificateToMember(t *testing.T) {
	ca := testenv.NewCA(t, "imago cluster CA")
	join := func(context.Context, uint64) JoinInfo { return JoinInfo{Leader: 1, Confirmed: true} }
	n1, h1 := startTransport(t, TransportConfig{ID: 1, Join: join, Peers: map[uint64]string{2: "127.0.0.2:1"},
		TLS: memberTLS(t, ca, "node1", "127.0.0.1")})
	hello := func(from uint64) []byte {
		b, err := proto.Marshal(&pb.Message{Type: pb.MsgVote.Enum(), To: new(uint64(1)), From: new(from), Term: new(uint64(99))})
		if err != nil {
			t.Fatal(err)
		}
		out := append([]byte(helloMagic), 1)
		out = binary.BigEndian.AppendUint64(out, from)
		out = binary.BigEndian.AppendUint64(out, 1)
		out = binary.BigEndian.AppendUint32(out, uint32(len(b)))
		return append(out, b...)
	}
	send := func(cert tls.Certificate, from uint64) (heard bool) {
		c, err := tls.Dial("tcp", n1.Addr(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write(hello(from)); err != nil {
			t.Fatal(err)
		}
		closed := make(chan struct{}) // the member closes a refused connection
		go func() {
			io.Copy(io.Discard, c)
			close(closed)
		}()
		select {
		case m := <-h1.stepped:
			return m.GetFrom() == from
		case <-closed:
			select {
			case m := <-h1.stepped:
				t.Fatalf("a refused connection's %s from %d reached raft", m.GetType(), m.GetFrom())
			default:
			}
			return false
		case <-time.After(10 * time.Second):
			t.Fatal("the member neither heard nor closed the connection")
			return false
		}
	}
	if send(ca.Issue(t, "node3", "127.0.0.3"), 2) {
		t.Fatal("a certificate naming 127.0.0.3 spoke as node 2, whose raft address is 127.0.0.2")
	}
	if send(ca.Issue(t, "node9", "127.0.0.1"), 9) {
		t.Fatal("a stream from node 9, which this member does not know, reached raft")
	}
	if !send(ca.Issue(t, "node2", "127.0.0.2"), 2) {
		t.Fatal("node 2's own certificate was not heard")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := AskJoin(ctx, memberTLS(t, ca, "node4", "127.0.0.4"), 4, 1, n1.Addr()); err != nil {
		t.Fatalf("the join question of a node not known yet: %v", err)
	}
}
