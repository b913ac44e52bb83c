package gateway

import (
	"io"
	"net/http"
)

// readBody reads the request body into a pooled buffer, enforcing Options.MaxBodyBytes with
// http.MaxBytesReader (413 payload_too_large). The caller returns the buffer with putBuf once
// nothing refers to the body any more.
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
			*bp = buf
			putBuf(bp)
			return nil, err
		}
	}
	*bp = buf
	if rw, ok := w.(*recorder); ok {
		rw.bodyRead = int64(len(buf))
	}
	return bp, nil
}
