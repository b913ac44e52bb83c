package textproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

const (
	readBufferSize  = 64 << 10
	writeBufferSize = 64 << 10
	answerQueue     = 256
	lingerTime      = 500 * time.Millisecond
	lingerBytes     = 4 << 20
)

// conn is one client connection: a reader goroutine (readLoop: parse, execute, queue the
// answer) and a writer goroutine (writeLoop: write answers, flush when none is queued).
type conn struct {
	s      *Server
	nc     net.Conn
	remote string
	br     *bufio.Reader
	out    chan []byte // answers, in request order; closed by the reader when it ends
	wdone  chan struct{}

	// token is the authenticated token (nil: auth off, or not yet authenticated).
	token  *authToken
	authed bool
	// authBy is when a connection that has not authenticated is closed (AuthTimeout after
	// it was accepted; the reader's waits never go past it).
	authBy time.Time

	mu       sync.Mutex // guards the fields below, and orders read deadlines against stop
	stopping bool
	// stopBy, set by stop, is when the writer gives up on the answers still queued: WriteTimeout
	// after Close for all of them, not WriteTimeout for each.
	stopBy  time.Time
	waiting bool // the reader is blocked waiting for a request
	// queued counts the bytes of the answers sent to the writer and not yet written; while it
	// is over AnswerBufferBytes the reader waits on drained before reading a request.
	queued    int
	throttled bool // the reader waits on drained
	drained   sync.Cond

	puts   putBatch
	linger bool // close after a final answer: half-close and drain what the client still sends
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		s:      s,
		nc:     nc,
		remote: nc.RemoteAddr().String(),
		br:     bufio.NewReaderSize(nc, readBufferSize),
		out:    make(chan []byte, answerQueue),
		wdone:  make(chan struct{}),
		authed: s.auth == nil,
	}
	c.drained.L = &c.mu
	if !c.authed {
		c.authBy = time.Now().Add(s.opts.AuthTimeout)
	}
	return c
}

// stop asks the connection to end after the command it is executing: a reader waiting for
// a request is woken at once.
func (c *conn) stop() {
	c.mu.Lock()
	c.stopping = true
	if c.stopBy.IsZero() {
		c.stopBy = time.Now().Add(c.s.opts.WriteTimeout)
	}
	if c.waiting {
		c.nc.SetReadDeadline(time.Now())
	}
	c.drained.Broadcast()
	c.mu.Unlock()
}

// arm sets the read deadline for a wait for the next request: IdleTimeout from now, or
// before auth the fixed authBy, which no byte (an empty line) moves. It reports false when
// the connection is stopping.
func (c *conn) arm() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopping {
		return false
	}
	c.waiting = true
	deadline := time.Now().Add(c.s.opts.IdleTimeout)
	if !c.authed && c.authBy.Before(deadline) {
		deadline = c.authBy
	}
	c.nc.SetReadDeadline(deadline)
	return true
}

func (c *conn) disarm() {
	c.mu.Lock()
	c.waiting = false
	c.mu.Unlock()
}

func (c *conn) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// send queues an answer for the writer.
func (c *conn) send(b []byte) {
	c.mu.Lock()
	c.queued += len(b)
	c.mu.Unlock()
	c.out <- b
}

// written records that the writer is done with an answer of n bytes.
func (c *conn) written(n int) {
	c.mu.Lock()
	c.queued -= n
	if c.throttled && c.queued <= c.s.opts.AnswerBufferBytes {
		c.drained.Broadcast()
	}
	c.mu.Unlock()
}

// waitAnswers holds the reader while the answers queued for the writer are over
// AnswerBufferBytes, so that a client that sends requests and does not read their answers
// makes the server hold at most that much (and one more answer) for it. A client that never
// reads is closed by the writer's WriteTimeout. It reports false when Close stopped the wait.
func (c *conn) waitAnswers() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.queued > c.s.opts.AnswerBufferBytes {
		if c.stopping {
			return false
		}
		c.throttled = true
		c.drained.Wait()
		c.throttled = false
	}
	return true
}

// writeDeadline is the deadline of the writer's next write: WriteTimeout from now, but never
// past stopBy, so that a client that reads slowly cannot hold Close for longer than that.
func (c *conn) writeDeadline() time.Time {
	d := time.Now().Add(c.s.opts.WriteTimeout)
	c.mu.Lock()
	if !c.stopBy.IsZero() && c.stopBy.Before(d) {
		d = c.stopBy
	}
	c.mu.Unlock()
	return d
}

func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	defer close(c.wdone)
	bw := bufio.NewWriterSize(c.nc, writeBufferSize)
	failed := false
	for b := range c.out {
		if failed {
			c.written(len(b))
			continue // keep draining so that the reader never blocks
		}
		c.nc.SetWriteDeadline(c.writeDeadline())
		_, err := bw.Write(b)
		if err == nil && len(c.out) == 0 {
			err = bw.Flush()
		}
		if err != nil {
			c.writeFailed(err)
			failed = true
		}
		c.s.stats.bytesOut.Add(int64(len(b)))
		c.written(len(b))
	}
	if !failed {
		c.nc.SetWriteDeadline(c.writeDeadline())
		if err := bw.Flush(); err != nil {
			c.writeFailed(err)
		}
	}
}

// writeFailed ends the connection: the reader's next read fails.
func (c *conn) writeFailed(err error) {
	c.s.log.Debug("text protocol write failed; closing", "remote", c.remote, "err", err)
	c.nc.Close()
}

func (c *conn) readLoop() {
	defer c.s.wg.Done()
	defer func() {
		close(c.out)
		<-c.wdone
		if c.linger {
			lingerClose(c.nc)
		} else {
			c.nc.Close()
		}
		c.s.removeConn(c)
	}()
	c.s.log.Debug("text protocol connection", "remote", c.remote)
	for {
		if !c.waitAnswers() {
			return
		}
		line, err := c.readLine()
		if err != nil {
			c.readFailed(err)
			return
		}
		if !c.handle(line) {
			return
		}
	}
}

// readFailed handles the error that ends reading: EOF, an idle timeout, Close, an overlong line.
func (c *conn) readFailed(err error) {
	var le *errLine
	switch {
	case errors.As(err, &le):
		c.s.stats.badRequests.Add(1)
		c.send(appendResult(nil, codeBadRequest, 0, le.msg+"; closing the connection"))
		c.linger = true
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case errors.Is(err, os.ErrDeadlineExceeded):
		switch {
		case c.isStopping():
		case !c.authed:
			c.s.stats.authFailures.Add(1)
			c.s.log.Info("text protocol connection did not authenticate in time; closing", "remote", c.remote, "auth_timeout", c.s.opts.AuthTimeout)
			c.send(appendResult(nil, codeUnauthorized, 0, "no auth within "+c.s.opts.AuthTimeout.String()+
				" of connecting: the first request must be auth <token> <opaque>; closing the connection"))
			c.linger = true
		default:
			c.s.log.Debug("text protocol connection idle; closing", "remote", c.remote, "idle_timeout", c.s.opts.IdleTimeout)
		}
	default:
		c.s.log.Debug("text protocol read failed", "remote", c.remote, "err", err)
	}
}

// readLine returns the next request line, "\n" included. The line aliases the read buffer
// and is valid until the next read. A line longer than MaxLineBytes is an *errLine.
func (c *conn) readLine() ([]byte, error) {
	max := c.s.opts.MaxLineBytes
	for {
		buf, _ := c.br.Peek(c.br.Buffered())
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			if i+1 > max {
				return nil, lineErr("the request line is longer than %d bytes", max)
			}
			c.br.Discard(i + 1)
			c.s.stats.bytesIn.Add(int64(i + 1))
			return buf[:i+1], nil
		}
		if len(buf) >= max {
			return nil, lineErr("the request line is longer than %d bytes", max)
		}
		if !c.arm() {
			return nil, net.ErrClosed
		}
		_, err := c.br.Peek(len(buf) + 1)
		c.disarm()
		if err != nil {
			return nil, err
		}
	}
}

// errTruncated: the payload stopped arriving (PayloadTimeout without a byte) or did not
// arrive in full within PayloadMaxTime.
var errTruncated = errors.New("truncated payload")

// readPayload appends the n bytes of a payload to dst. It returns errTruncated (with what
// arrived consumed) when the rest does not come in time (see payloadWait), and the read error
// at EOF or when the connection fails.
func (c *conn) readPayload(dst []byte, n int) ([]byte, int, error) {
	if c.br.Buffered() >= n {
		b, _ := c.br.Peek(n)
		dst = append(dst, b...)
		c.br.Discard(n)
		c.s.stats.bytesIn.Add(int64(n))
		return dst, n, nil
	}
	start := len(dst)
	dst = append(dst, make([]byte, n)...)
	w := c.payloadWait()
	got := 0
	for got < n {
		if err := w.arm(); err != nil {
			return dst[:start], got, err
		}
		m, err := c.br.Read(dst[start+got:])
		got += m
		c.s.stats.bytesIn.Add(int64(m))
		if err != nil {
			return dst[:start], got, w.failed(err)
		}
	}
	return dst, n, nil
}

// skipPayload discards the n bytes of a payload that will not be used, with the waits of
// readPayload.
func (c *conn) skipPayload(n int) (int, error) {
	w := c.payloadWait()
	got := 0
	for got < n {
		if c.br.Buffered() == 0 {
			if err := w.arm(); err != nil {
				return got, err
			}
			if _, err := c.br.Peek(1); err != nil {
				return got, w.failed(err)
			}
		}
		m, _ := c.br.Discard(min(n-got, c.br.Buffered()))
		got += m
		c.s.stats.bytesIn.Add(int64(m))
	}
	return got, nil
}

// payloadDeadline bounds the wait for a payload: each read waits at most PayloadTimeout (so
// the deadline moves on while bytes keep coming), and the whole payload PayloadMaxTime.
type payloadDeadline struct {
	c   *conn
	end time.Time // PayloadMaxTime after the payload's line was read
}

func (c *conn) payloadWait() payloadDeadline {
	return payloadDeadline{c: c, end: time.Now().Add(c.s.opts.PayloadMaxTime)}
}

// arm sets the read deadline of the next read; past the cap it returns errTruncated.
func (w payloadDeadline) arm() error {
	now := time.Now()
	if !now.Before(w.end) {
		return errTruncated
	}
	dl := now.Add(w.c.s.opts.PayloadTimeout)
	if dl.After(w.end) {
		dl = w.end
	}
	w.c.nc.SetReadDeadline(dl)
	return nil
}

// failed turns a read's deadline error into errTruncated, unless Close is stopping the
// connection.
func (w payloadDeadline) failed(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) && !w.c.isStopping() {
		return errTruncated
	}
	return err
}

// lingerClose closes nc after a final answer without losing it: closing a socket that still
// has unread input makes the kernel reset the connection, which can discard the answer before
// the client reads it. So: half-close, drain briefly, close.
// Over TLS (protocol.tls) the half-close is TLS's close_notify; the drain is the same.
func lingerClose(nc net.Conn) {
	if cw, ok := nc.(interface{ CloseWrite() error }); ok { // *net.TCPConn, *tls.Conn
		cw.CloseWrite()
		nc.SetReadDeadline(time.Now().Add(lingerTime))
		io.CopyN(io.Discard, nc, lingerBytes)
	}
	nc.Close()
}
