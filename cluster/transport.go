package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Peer transport. Every node listens on its raft address and keeps one outbound TCP connection
// to each peer, inside mutual TLS when TransportConfig.TLS is set (transport_tls.go: who is let
// in and whom a dialler trusts). A connection starts with a hello (magic "IMRT", version 1, the
// sender's id and the id it means to reach), so a node that is given the wrong address for a
// peer refuses the connection instead of taking someone else's traffic. Then each frame is a
// 4-byte big-endian length and a marshalled raftpb.Message.
//
// Sending never blocks the Ready loop: each peer has a bounded queue, and a message that does
// not fit is dropped (raft retries appends and heartbeats, and the peer is reported
// unreachable so the leader probes instead of streaming). Message order per peer is kept.

const (
	helloMagic = "IMRT"
	// maxFrame bounds what a reader allocates for one message; raft's messages are bounded by
	// MaxSizePerMsg (1 MiB) plus one entry, and a batch is far below this.
	maxFrame = 64 << 20
	// peerQueue is the number of messages buffered per peer.
	peerQueue = 4096
)

// Handler receives what the transport reads from peers; Node implements it.
type Handler interface {
	Step(m *pb.Message)
	ReportUnreachable(id uint64)
}

// TransportConfig configures a Transport.
type TransportConfig struct {
	ID uint64
	// Listen is the raft address to listen on ("127.0.0.1:0" picks a port; see Addr).
	Listen string
	// Listener, if set, is used instead of listening on Listen (tests pass one so that every
	// node's address is known before any transport exists).
	Listener net.Listener
	// Peers maps every other node's id to its raft address.
	Peers map[uint64]string
	// DialTimeout and WriteTimeout bound a connect and one write (default 2s and 5s); a peer
	// that takes longer is treated as unreachable and redialled.
	DialTimeout  time.Duration
	WriteTimeout time.Duration
	Logger       *slog.Logger
	// Files serves the files of a snapshot to the peers that copy it (snapshotfile.go); nil:
	// none are served.
	Files FileSource
	// Join answers the join question of a node that starts with --join-cluster and no raft
	// state (joinquery.go); nil: none is answered.
	Join JoinSource
	// RefusalLogInterval is how often, at most, a refused connection from one remote host is
	// logged (default 1m): the first at once, then one line per interval with the number
	// suppressed since the last (logthrottle.go). RefusedConnections counts every one.
	RefusalLogInterval time.Duration
	// TLS, if set, makes every connection on the raft port mutual TLS: the listener admits
	// only members with a certificate of the cluster's CA, and every dial (raft messages,
	// snapshot files) verifies the member it reaches (transport_tls.go). Nil: plain TCP with
	// no authentication, for loopback or a network nobody else can reach.
	TLS *PeerTLS
}

// Transport is the peer transport. It owns one listener goroutine, one reader goroutine per
// inbound connection and one writer goroutine per peer; Stop ends them all.
type Transport struct {
	cfg     TransportConfig
	log     *slog.Logger
	ln      net.Listener
	handler Handler

	pmu   sync.RWMutex // guards peers (membership changes add and remove them)
	peers map[uint64]*peer

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	inbound map[net.Conn]struct{}
	// Dropped counts messages dropped because a peer's queue was full.
	Dropped atomic.Uint64

	// refusedLog throttles the WARN lines of refused connections per remote host, acceptLog
	// those of failed accepts; refused counts the refusals by reason.
	refusedLog, acceptLog *logThrottle
	refused               [len(refusalReasons)]atomic.Uint64
}

// Why an inbound connection was refused or cut (RefusedConnections).
type refusal int

const (
	refusedTLS       refusal = iota // the TLS handshake failed: no member certificate, not TLS at all
	refusedNotMember                // the certificate does not belong to the member the hello names
	refusedHello                    // no valid hello, or one meant for another node
	refusedFrame                    // a frame larger than maxFrame
	refusedMessage                  // a frame that is no raft message, or one misaddressed
)

// refusalReasons names the refusals, in the order of their constants.
var refusalReasons = [...]string{
	refusedTLS:       "tls",
	refusedNotMember: "not_member",
	refusedHello:     "hello",
	refusedFrame:     "frame",
	refusedMessage:   "message",
}

type peer struct {
	id     uint64
	addr   string
	cancel context.CancelFunc // stops its writer
	q      chan []byte
	mu     sync.Mutex
	conn   net.Conn
}

// NewTransport listens on cfg.Listen. Messages are accepted from peers once Start is called.
func NewTransport(cfg TransportConfig) (*Transport, error) {
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 2 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RefusalLogInterval <= 0 {
		cfg.RefusalLogInterval = defaultRefusalLogInterval
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("raft transport: listen on %s: %w", cfg.Listen, err)
		}
	}
	t := &Transport{
		cfg:     cfg,
		log:     cfg.Logger.With("node", cfg.ID),
		ln:      ln,
		peers:   make(map[uint64]*peer),
		inbound: make(map[net.Conn]struct{}),
	}
	t.refusedLog = newLogThrottle(t.log, cfg.RefusalLogInterval, defaultRefusalLogHosts, time.Now)
	t.acceptLog = newLogThrottle(t.log, cfg.RefusalLogInterval, 1, time.Now)
	for id, addr := range cfg.Peers {
		if id != cfg.ID {
			t.peers[id] = &peer{id: id, addr: addr, q: make(chan []byte, peerQueue)}
		}
	}
	return t, nil
}

// Connected reports whether the transport holds an open connection to peer id (its writer
// connected and has not failed since). It is a hint for operators, not a failure detector.
func (t *Transport) Connected(id uint64) bool {
	p := t.peer(id)
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn != nil
}

// RefusedConnections counts the inbound connections refused or cut since the transport was
// made, by reason: "tls" (the TLS handshake failed), "not_member" (the certificate is not
// that of the member the hello names), "hello" (no valid hello, or one for another node),
// "frame" (a frame too large), "message" (not a raft message, or misaddressed). Every reason
// is present, zero or not.
func (t *Transport) RefusedConnections() map[string]uint64 {
	out := make(map[string]uint64, len(refusalReasons))
	for r, name := range refusalReasons {
		out[name] = t.refused[r].Load()
	}
	return out
}

// refuse logs a refused or cut inbound connection (throttled per remote host) and counts it.
// The count comes last, so whoever sees it has seen the line, if one was logged.
func (t *Transport) refuse(why refusal, remote net.Addr, msg string, args ...any) {
	host := remote.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	t.refusedLog.warn(host, msg, append([]any{"remote", remote.String(), "reason", refusalReasons[why]}, args...)...)
	t.refused[why].Add(1)
}

// Addr is the address the transport listens on.
func (t *Transport) Addr() string { return t.ln.Addr().String() }

// Start accepts connections and starts the per-peer writers; h receives inbound messages.
func (t *Transport) Start(ctx context.Context, h Handler) {
	t.handler = h
	t.ctx, t.cancel = context.WithCancel(ctx)
	t.wg.Add(1)
	go t.accept()
	t.pmu.RLock()
	defer t.pmu.RUnlock()
	for _, p := range t.peers {
		t.startPeer(p)
	}
}

func (t *Transport) startPeer(p *peer) {
	pctx, cancel := context.WithCancel(t.ctx)
	p.cancel = cancel
	t.wg.Add(1)
	go t.write(pctx, p)
}

// AddPeer starts sending to a member added to the group (or changes a peer's address). It is
// safe to call before or after Start.
func (t *Transport) AddPeer(id uint64, addr string) {
	if id == t.cfg.ID {
		return
	}
	t.pmu.Lock()
	defer t.pmu.Unlock()
	if old := t.peers[id]; old != nil {
		if old.addr == addr {
			return
		}
		t.stopPeerLocked(old)
	}
	p := &peer{id: id, addr: addr, q: make(chan []byte, peerQueue)}
	t.peers[id] = p
	if t.ctx != nil {
		t.startPeer(p)
	}
}

// RemovePeer stops sending to a member removed from the group.
func (t *Transport) RemovePeer(id uint64) {
	t.pmu.Lock()
	defer t.pmu.Unlock()
	if p := t.peers[id]; p != nil {
		t.stopPeerLocked(p)
		delete(t.peers, id)
	}
}

func (t *Transport) stopPeerLocked(p *peer) {
	if p.cancel != nil {
		p.cancel()
	}
	p.mu.Lock()
	if p.conn != nil {
		p.conn.Close()
	}
	p.mu.Unlock()
}

func (t *Transport) peer(id uint64) *peer {
	t.pmu.RLock()
	defer t.pmu.RUnlock()
	return t.peers[id]
}

// Stop closes the listener and every connection and waits for the goroutines.
func (t *Transport) Stop() {
	if t.cancel == nil {
		t.ln.Close()
		return
	}
	t.cancel()
	t.ln.Close()
	t.mu.Lock()
	for c := range t.inbound {
		c.Close()
	}
	t.mu.Unlock()
	t.pmu.RLock()
	for _, p := range t.peers {
		p.mu.Lock()
		if p.conn != nil {
			p.conn.Close()
		}
		p.mu.Unlock()
	}
	t.pmu.RUnlock()
	t.wg.Wait()
}

// Send implements Sender: it marshals each message now (they share memory with the log) and
// queues it for its peer, dropping it if the queue is full.
func (t *Transport) Send(msgs []*pb.Message) {
	for _, m := range msgs {
		p := t.peer(m.GetTo())
		if p == nil {
			continue
		}
		b, err := proto.Marshal(m)
		if err != nil {
			t.log.Error("raft transport: marshal message", "type", m.GetType().String(), "to", m.GetTo(), "err", err)
			continue
		}
		queued := true
		select {
		case p.q <- b:
		default:
			queued = false
			t.Dropped.Add(1)
			if t.handler != nil {
				t.handler.ReportUnreachable(p.id)
			}
		}
		if m.GetType() == pb.MessageType_MsgSnap {
			// Queued counts as sent: the leader then probes the peer from the snapshot's
			// index, and sends the snapshot again if the peer still rejects (it copies and
			// restarts meanwhile).
			if r, ok := t.handler.(snapshotReporter); ok {
				r.ReportSnapshot(p.id, !queued)
			}
		}
	}
}

// accept accepts connections until Stop. An accept that fails while the listener is open
// (out of file descriptors, a connection aborted in the backlog) is retried after a pause
// that doubles up to a second, as net/http does: giving up would leave the node deaf to its
// peers until a restart. Such failures are logged as refusals are, at most once an interval.
func (t *Transport) accept() {
	defer t.wg.Done()
	var pause time.Duration
	for {
		c, err := t.ln.Accept()
		if err != nil {
			if t.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			t.acceptLog.warn("accept", "raft transport: accept", "err", err)
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			select {
			case <-t.ctx.Done():
				return
			case <-time.After(pause):
			}
			continue
		}
		pause = 0
		t.mu.Lock()
		if t.ctx.Err() != nil {
			t.mu.Unlock()
			c.Close()
			return
		}
		t.inbound[c] = struct{}{}
		t.mu.Unlock()
		t.wg.Add(1)
		go t.read(c)
	}
}

// read serves one inbound connection: raw as accepted (Stop closes it), c the connection with
// the member once TLS, if configured, has admitted it.
func (t *Transport) read(raw net.Conn) {
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		delete(t.inbound, raw)
		t.mu.Unlock()
		raw.Close()
	}()
	c, err := t.acceptPeer(raw)
	if err != nil {
		if t.ctx.Err() == nil {
			t.refuse(refusedTLS, raw.RemoteAddr(), "raft transport: refused connection", "err", err)
		}
		return
	}
	r := bufio.NewReaderSize(c, 64<<10)
	var hello [len(helloMagic) + 1 + 16]byte
	if _, err := io.ReadFull(r, hello[:]); err != nil {
		return
	}
	from, to := binary.BigEndian.Uint64(hello[5:]), binary.BigEndian.Uint64(hello[13:])
	fileConn, joinConn := hello[4] == helloFile, hello[4] == helloJoin
	if string(hello[:4]) != helloMagic || (hello[4] != 1 && !fileConn && !joinConn) || to != t.cfg.ID {
		t.refuse(refusedHello, raw.RemoteAddr(), "raft transport: refused connection", "from", from, "to", to)
		return
	}
	if err := t.checkSender(c, from, !fileConn && !joinConn); err != nil {
		t.refuse(refusedNotMember, raw.RemoteAddr(), "raft transport: refused connection", "from", from, "err", err)
		return
	}
	var lenBuf [4]byte
	for {
		if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(lenBuf[:])
		if n > maxFrame {
			t.refuse(refusedFrame, raw.RemoteAddr(), "raft transport: frame too large", "from", from, "bytes", n)
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(r, buf); err != nil {
			return
		}
		if fileConn {
			t.serveFile(c, from, buf)
			return
		}
		if joinConn {
			t.serveJoin(c, from, buf)
			return
		}
		m := &pb.Message{}
		if err := proto.Unmarshal(buf, m); err != nil {
			t.refuse(refusedMessage, raw.RemoteAddr(), "raft transport: bad message", "from", from, "err", err)
			return
		}
		if m.GetTo() != t.cfg.ID || m.GetFrom() != from {
			t.refuse(refusedMessage, raw.RemoteAddr(), "raft transport: misaddressed message", "from", m.GetFrom(), "to", m.GetTo(), "conn_from", from)
			return
		}
		t.handler.Step(m)
	}
}

// write keeps one connection to p and writes its queue to it, redialling with a capped backoff
// after any error. Messages of a failed write are lost; raft sends again.
func (t *Transport) write(ctx context.Context, p *peer) {
	defer t.wg.Done()
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		conn, err := t.dial(ctx, p)
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		began := time.Now()
		err = t.stream(ctx, p, conn)
		conn.Close()
		p.mu.Lock()
		p.conn = nil
		p.mu.Unlock()
		if ctx.Err() == nil {
			t.log.Debug("raft transport: connection to peer lost", "peer", p.id, "err", err)
			t.handler.ReportUnreachable(p.id)
		}
		if time.Since(began) >= time.Second {
			backoff = 50 * time.Millisecond
			continue
		}
		// A connection that ended at once (something accepts for the peer and closes, as a
		// proxy before a stopped node does): back off as after a failed dial.
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (t *Transport) dial(ctx context.Context, p *peer) (net.Conn, error) {
	conn, err := dialPeer(ctx, t.cfg.TLS, p.addr, t.cfg.DialTimeout)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if t.ctx.Err() != nil {
		p.mu.Unlock()
		conn.Close()
		return nil, t.ctx.Err()
	}
	p.conn = conn
	p.mu.Unlock()
	hello := []byte(helloMagic)
	hello = append(hello, 1)
	hello = binary.BigEndian.AppendUint64(hello, t.cfg.ID)
	hello = binary.BigEndian.AppendUint64(hello, p.id)
	conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
	if _, err := conn.Write(hello); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func (t *Transport) stream(ctx context.Context, p *peer, conn net.Conn) error {
	// The peer never writes on a connection we dialled, so a read returns only when the
	// connection is closed (the peer stopped or restarted). Noticing it here, while the link is
	// idle, makes the writer redial before the next message instead of losing that message in
	// the dead connection. The caller closes conn after stream returns, which ends the read.
	closed := make(chan struct{})
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		var one [1]byte
		_, _ = conn.Read(one[:])
		close(closed)
	}()
	w := bufio.NewWriterSize(conn, 64<<10)
	var lenBuf [4]byte
	for {
		var b []byte
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-closed:
			return errors.New("the peer closed the connection")
		case b = <-p.q:
		}
		conn.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
		for {
			binary.BigEndian.PutUint32(lenBuf[:], uint32(len(b)))
			if _, err := w.Write(lenBuf[:]); err != nil {
				return err
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
			// Flush when the queue is empty: one write for whatever piled up meanwhile.
			select {
			case b = <-p.q:
				continue
			default:
			}
			break
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
}
