package gateway

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
)

// This file holds POST /v1/topics/{topic}/messages.

// maxIdempotencyKey is the longest Idempotency-Key accepted, in bytes.
const maxIdempotencyKey = 255

// idempotencyKey returns the request's Idempotency-Key ("" when absent). It must be 1 to 255
// bytes of printable ASCII and appear at most once.
func idempotencyKey(r *http.Request) (string, error) {
	vals := r.Header["Idempotency-Key"]
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", newError(http.StatusBadRequest, api.CodeInvalidIdempotencyKey, "send the Idempotency-Key header once, not %d times", len(vals))
	}
	k := vals[0]
	if len(k) == 0 || len(k) > maxIdempotencyKey {
		return "", newError(http.StatusBadRequest, api.CodeInvalidIdempotencyKey,
			"the Idempotency-Key must be 1 to %d bytes long, not %d", maxIdempotencyKey, len(k))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", newError(http.StatusBadRequest, api.CodeInvalidIdempotencyKey,
				"the Idempotency-Key must be printable ASCII; byte %d is 0x%02x", i, k[i])
		}
	}
	return k, nil
}

func (s *Server) handleProduce(w http.ResponseWriter, r *http.Request) error {
	topic, err := nameParam(r, "topic")
	if err != nil {
		return err
	}
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	bp, err := s.readBody(w, r)
	if err != nil {
		return err
	}
	// The messages alias the body buffer; Produce has returned (and the broker holds no
	// reference) before the buffer goes back to the pool.
	defer putBuf(bp)
	msgs, err := decodeProduceRequest(*bp)
	if err != nil {
		return err
	}
	res, err := s.b.Produce(r.Context(), topic, msgs, key)
	if errors.Is(err, broker.ErrUnknownTopic) {
		if !s.opts.AutoCreateTopics {
			return unknownTopicError(topic)
		}
		if err := s.autoCreateTopic(topic); err != nil {
			return err
		}
		res, err = s.b.Produce(r.Context(), topic, msgs, key)
	}
	if err != nil {
		return err
	}
	out := getBuf()
	defer putBuf(out)
	*out = appendProduceResponse(*out, res)
	writeBody(w, http.StatusOK, *out)
	return nil
}

// appendProduceResponse appends {"offsets":[{"partition":P,"offset":O},...]} and, for a
// repeat, "duplicate":true.
func appendProduceResponse(b []byte, res broker.ProduceResult) []byte {
	b = append(b, `{"offsets":[`...)
	for i, p := range res.Offsets {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"partition":`...)
		b = strconv.AppendInt(b, int64(p.Partition), 10)
		b = append(b, `,"offset":`...)
		b = strconv.AppendInt(b, p.Offset, 10)
		b = append(b, '}')
	}
	b = append(b, ']')
	if res.Duplicate {
		b = append(b, `,"duplicate":true`...)
	}
	return append(b, "}\n"...)
}

// writeBody writes a JSON body with its length.
func writeBody(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	w.Write(b)
}
