package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"
)

// rawConn is the benchmark's HTTP/1.1 client: one keep-alive TCP connection, requests written
// from pre-built bytes in one write, responses parsed just enough (status line, Content-Length
// or chunked framing, Connection: close, Retry-After). It exists so that the load generator
// costs the server as little CPU as possible on a shared machine; net/http's client spends far
// more per request (header maps, goroutines per connection, body wrappers). It is not a
// general client: no TLS, no redirects, no 1xx other than skipping them, one request at a time.
type rawConn struct {
	addr string
	c    net.Conn
	br   *bufio.Reader
	body []byte // reused buffer for bodies that are kept
}

// response is what roundTrip parsed. Body aliases the connection's buffer until the next call.
type response struct {
	status     int
	body       []byte // only when keepBody was set
	bodyLen    int64  // bytes of body received (also when not kept)
	retryAfter time.Duration
}

func newRawConn(addr string) *rawConn { return &rawConn{addr: addr} }

func (rc *rawConn) close() {
	if rc.c != nil {
		rc.c.Close()
		rc.c = nil
	}
}

// roundTrip sends req (a complete HTTP/1.1 request) and reads the response. On any error the
// connection is closed; the next call dials again.
func (rc *rawConn) roundTrip(req []byte, keepBody bool) (response, error) {
	if rc.c == nil {
		c, err := net.DialTimeout("tcp", rc.addr, 5*time.Second)
		if err != nil {
			return response{}, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetNoDelay(true)
		}
		rc.c = c
		if rc.br == nil {
			rc.br = bufio.NewReaderSize(c, 64<<10)
		} else {
			rc.br.Reset(c)
		}
	}
	if _, err := rc.c.Write(req); err != nil {
		rc.close()
		return response{}, err
	}
	resp, closeAfter, err := rc.readResponse(keepBody)
	if err != nil || closeAfter {
		rc.close()
	}
	return resp, err
}

var (
	hdrContentLength    = []byte("content-length:")
	hdrTransferEncoding = []byte("transfer-encoding:")
	hdrConnection       = []byte("connection:")
	hdrRetryAfter       = []byte("retry-after:")
	errMalformed        = errors.New("malformed HTTP response")
)

func (rc *rawConn) readResponse(keepBody bool) (resp response, closeAfter bool, err error) {
	for {
		line, err := rc.br.ReadSlice('\n')
		if err != nil {
			return resp, true, err
		}
		// "HTTP/1.1 200 OK\r\n"
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
			return resp, true, fmt.Errorf("%w: status line %q", errMalformed, line)
		}
		resp.status, err = strconv.Atoi(string(line[9:12]))
		if err != nil {
			return resp, true, fmt.Errorf("%w: status line %q", errMalformed, line)
		}
		closeAfter = line[7] == '0' // HTTP/1.0 closes unless told otherwise
		contentLength, chunked := int64(-1), false
		for {
			h, err := rc.br.ReadSlice('\n')
			if err != nil {
				return resp, true, err
			}
			h = bytes.TrimRight(h, "\r\n")
			if len(h) == 0 {
				break
			}
			switch {
			case hasPrefixFold(h, hdrContentLength):
				contentLength, err = strconv.ParseInt(string(bytes.TrimSpace(h[len(hdrContentLength):])), 10, 64)
				if err != nil || contentLength < 0 {
					return resp, true, fmt.Errorf("%w: %q", errMalformed, h)
				}
			case hasPrefixFold(h, hdrTransferEncoding):
				chunked = bytes.Contains(bytes.ToLower(h), []byte("chunked"))
			case hasPrefixFold(h, hdrConnection):
				closeAfter = bytes.Contains(bytes.ToLower(h), []byte("close"))
			case hasPrefixFold(h, hdrRetryAfter):
				if s, err := strconv.Atoi(string(bytes.TrimSpace(h[len(hdrRetryAfter):]))); err == nil {
					resp.retryAfter = time.Duration(s) * time.Second
				}
			}
		}
		if resp.status >= 100 && resp.status < 200 {
			continue // 100 Continue and friends: the real answer follows
		}
		rc.body = rc.body[:0]
		switch {
		case chunked:
			err = rc.readChunked(&resp, keepBody)
		case contentLength >= 0:
			err = rc.readN(&resp, contentLength, keepBody)
		case resp.status == 204 || resp.status == 304:
		default:
			// No length: the body runs to the end of the connection.
			closeAfter = true
			err = rc.readN(&resp, -1, keepBody)
		}
		if keepBody {
			resp.body = rc.body
		}
		return resp, closeAfter, err
	}
}

// readN reads n body bytes (n < 0: until EOF), keeping them in rc.body when keep is set.
func (rc *rawConn) readN(resp *response, n int64, keep bool) error {
	if !keep {
		if n < 0 {
			m, err := io.Copy(io.Discard, rc.br)
			resp.bodyLen += m
			return err
		}
		m, err := rc.br.Discard(int(n))
		resp.bodyLen += int64(m)
		return err
	}
	if n < 0 {
		b, err := io.ReadAll(rc.br)
		rc.body = append(rc.body, b...)
		resp.bodyLen += int64(len(b))
		return err
	}
	start := len(rc.body)
	if need := start + int(n); cap(rc.body) < need {
		nb := make([]byte, start, need+need/4)
		copy(nb, rc.body)
		rc.body = nb
	}
	rc.body = rc.body[:start+int(n)]
	m, err := io.ReadFull(rc.br, rc.body[start:])
	resp.bodyLen += int64(m)
	return err
}

// readChunked reads a chunked body: hex size line, data, CRLF, …, a zero size, trailers, CRLF.
func (rc *rawConn) readChunked(resp *response, keep bool) error {
	for {
		line, err := rc.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // chunk extensions
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return fmt.Errorf("%w: chunk size %q", errMalformed, line)
		}
		if size == 0 {
			for { // trailers up to the empty line
				t, err := rc.br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimRight(t, "\r\n")) == 0 {
					return nil
				}
			}
		}
		if err := rc.readN(resp, size, keep); err != nil {
			return err
		}
		if _, err := rc.br.Discard(2); err != nil { // CRLF after the data
			return err
		}
	}
}

func hasPrefixFold(s, lowerPrefix []byte) bool {
	return len(s) >= len(lowerPrefix) && bytes.EqualFold(s[:len(lowerPrefix)], lowerPrefix)
}

// httpTarget is the server address for raw requests.
type httpTarget struct {
	dialAddr string // host:port
	host     string // Host header
	auth     string // "Authorization: Bearer …\r\n" or ""
}

func parseTarget(server, token string) (httpTarget, error) {
	u, err := url.Parse(server)
	if err != nil {
		return httpTarget{}, usagef("--server %q: %v", server, err)
	}
	if u.Scheme != "http" {
		return httpTarget{}, usagef("--server %q: bench speaks plain http:// only", server)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	t := httpTarget{dialAddr: addr, host: u.Host}
	if token != "" {
		t.auth = "Authorization: Bearer " + token + "\r\n"
	}
	return t, nil
}

// request builds the bytes of one HTTP/1.1 request.
func (t httpTarget) request(method, path string, body []byte) []byte {
	return t.appendRequest(make([]byte, 0, 256+len(body)), method, path, body)
}

// appendRequest appends the bytes of one HTTP/1.1 request to b.
func (t httpTarget) appendRequest(b []byte, method, path string, body []byte) []byte {
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, path...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, t.host...)
	b = append(b, "\r\nUser-Agent: imago-bench\r\n"...)
	b = append(b, t.auth...)
	if body != nil {
		b = append(b, "Content-Type: application/json\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	return append(b, body...)
}
