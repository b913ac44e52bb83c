package gateway

import (
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/imagomq/imago/api"
)

// readBody reads the request body into a pooled buffer, enforcing Options.MaxBodyBytes with
// http.MaxBytesReader (413 payload_too_large). The caller returns the buffer with putBuf once
// nothing refers to the body any more.
//
// A body that cannot be read is the client's fault, never the server's: any read error other
// than the size limit becomes 400 invalid_json (bodyReadError), logged at Debug only. That
// covers a body shorter than its Content-Length (the client closed its side early), a
// malformed chunked encoding, a reset connection, and a body that did not arrive within the
// HTTP server's ReadTimeout. The timeout is 400 too, not 408: the API has no 408 code, and
// the request is refused the same way as any other body the server could not read.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) (*[]byte, error) {
	limit := s.opts.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, &http.MaxBytesError{Limit: limit}
	}
	bp := getBuf()
	buf := (*bp)[:0]
	if n := int(r.ContentLength); n > 0 && cap(buf) < n+1 {
		buf = make([]byte, 0, n+1) // +1 so that EOF is seen without growing
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			read := len(buf)
			*bp = buf
			putBuf(bp)
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, err
			}
			s.log.Debug("request body unreadable", "method", r.Method, "path", r.URL.Path,
				"content_length", r.ContentLength, "bytes_read", read, "err", err)
			return nil, bodyReadError(err, read)
		}
	}
	*bp = buf
	if rw, ok := w.(*recorder); ok {
		rw.bodyRead = int64(len(buf))
	}
	return bp, nil
}

// bodyReadError is the 400 invalid_json answer to a request body that could not be read
// (err is the read error, read the bytes received before it); the message names the problem.
func bodyReadError(err error, read int) *apiError {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return newError(http.StatusBadRequest, api.CodeInvalidJSON,
			"the request body did not arrive within the server's read timeout (%d bytes received); send the whole body promptly", read)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return newError(http.StatusBadRequest, api.CodeInvalidJSON,
			"the request body ended after %d bytes, before the length its Content-Length or chunked encoding declared; send the whole body", read)
	}
	return newError(http.StatusBadRequest, api.CodeInvalidJSON,
		"the request body could not be read after %d bytes (%v); send a complete body with a valid Content-Length or chunked encoding", read, err)
}
