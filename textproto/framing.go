package textproto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"time"

	"github.com/imagomq/imago/broker"
)

// The payload of a value answer: messages back to back, each framed as below (docs/protocol.md has
// a worked example). All integers are big-endian. The layout is that of a broker record
// without the topic id and partition, which the get names already; the CRC is computed over
// the frame itself so that a client can check what it received.
//
//	 0 i64  offset
//	 8 u32  length of the rest of the message (from byte 12)
//	12 u32  CRC-32C (Castagnoli) of bytes [16, 12+length): everything below
//	16 i64  timestamp, unix milliseconds (set by the broker at append)
//	24 u8   attributes: bit 0 has key, bit 1 value is JSON text
//	25 u32  key length (0 without a key)
//	29 u32  value length
//	33 u16  header count
//	35 ...  key, then headers (u16 name length, name, u32 value length, value), then value
const (
	frameHeaderSize = 35
	attrHasKey      = 1
	attrValueJSON   = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Message is one message of a value answer, as DecodeMessages returns it. Its byte slices
// alias the decoded payload.
type Message struct {
	Offset    int64
	Timestamp time.Time
	Key       []byte // nil without a key
	Value     []byte
	ValueJSON bool
	Headers   []broker.Header
	CRC       uint32
}

// frameSize is the framed size of m.
func frameSize(m *broker.FetchedMessage) int {
	n := frameHeaderSize + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += 6 + len(h.Key) + len(h.Value)
	}
	return n
}

// appendFrame appends m's frame to dst.
func appendFrame(dst []byte, m *broker.FetchedMessage) []byte {
	size := frameSize(m)
	start := len(dst)
	dst = slices.Grow(dst, size)[:start+size]
	b := dst[start:]
	be := binary.BigEndian
	be.PutUint64(b[0:], uint64(m.Offset))
	be.PutUint32(b[8:], uint32(size-12))
	be.PutUint64(b[16:], uint64(m.Timestamp.UnixMilli()))
	var attrs byte
	if m.Key != nil {
		attrs |= attrHasKey
	}
	if m.ValueJSON {
		attrs |= attrValueJSON
	}
	b[24] = attrs
	be.PutUint32(b[25:], uint32(len(m.Key)))
	be.PutUint32(b[29:], uint32(len(m.Value)))
	be.PutUint16(b[33:], uint16(len(m.Headers)))
	at := frameHeaderSize + copy(b[frameHeaderSize:], m.Key)
	for _, h := range m.Headers {
		be.PutUint16(b[at:], uint16(len(h.Key)))
		at += 2 + copy(b[at+2:], h.Key)
		be.PutUint32(b[at:], uint32(len(h.Value)))
		at += 4 + copy(b[at+4:], h.Value)
	}
	copy(b[at:], m.Value)
	be.PutUint32(b[12:], crc32.Checksum(b[16:], castagnoli))
	return dst
}

// ErrBadFrame is returned by DecodeMessages for a payload that is not a valid sequence of frames.
var ErrBadFrame = errors.New("bad value frame")

// DecodeMessages parses the payload of a value answer, checking each message's CRC.
func DecodeMessages(p []byte) ([]Message, error) {
	var out []Message
	be := binary.BigEndian
	for len(p) > 0 {
		if len(p) < frameHeaderSize {
			return out, fmt.Errorf("%w: %d bytes left, a frame needs at least %d", ErrBadFrame, len(p), frameHeaderSize)
		}
		length := int64(be.Uint32(p[8:]))
		if length < frameHeaderSize-12 || length > int64(len(p)-12) {
			return out, fmt.Errorf("%w: length %d with %d bytes left", ErrBadFrame, length, len(p)-12)
		}
		f := p[:12+length]
		m := Message{Offset: int64(be.Uint64(f[0:])), CRC: be.Uint32(f[12:])}
		if crc32.Checksum(f[16:], castagnoli) != m.CRC {
			return out, fmt.Errorf("%w: offset %d: CRC mismatch", ErrBadFrame, m.Offset)
		}
		m.Timestamp = time.UnixMilli(int64(be.Uint64(f[16:]))).UTC()
		attrs := f[24]
		klen, vlen, hcount := int64(be.Uint32(f[25:])), int64(be.Uint32(f[29:])), int(be.Uint16(f[33:]))
		rest := f[frameHeaderSize:]
		if klen > int64(len(rest)) {
			return out, fmt.Errorf("%w: offset %d: key length %d", ErrBadFrame, m.Offset, klen)
		}
		if attrs&attrHasKey != 0 {
			m.Key = rest[:klen:klen]
		} else if klen != 0 {
			return out, fmt.Errorf("%w: offset %d: key length %d without the has-key attribute", ErrBadFrame, m.Offset, klen)
		}
		rest = rest[klen:]
		for i := 0; i < hcount; i++ {
			if len(rest) < 2 {
				return out, fmt.Errorf("%w: offset %d: header %d is cut", ErrBadFrame, m.Offset, i)
			}
			n := int(be.Uint16(rest))
			if len(rest) < 2+n+4 {
				return out, fmt.Errorf("%w: offset %d: header %d is cut", ErrBadFrame, m.Offset, i)
			}
			name := string(rest[2 : 2+n])
			rest = rest[2+n:]
			vn := int64(be.Uint32(rest))
			if vn > int64(len(rest)-4) {
				return out, fmt.Errorf("%w: offset %d: header %d is cut", ErrBadFrame, m.Offset, i)
			}
			m.Headers = append(m.Headers, broker.Header{Key: name, Value: string(rest[4 : 4+vn])})
			rest = rest[4+vn:]
		}
		if vlen != int64(len(rest)) {
			return out, fmt.Errorf("%w: offset %d: value length %d, %d bytes left in the frame", ErrBadFrame, m.Offset, vlen, len(rest))
		}
		m.Value = rest[:vlen:vlen]
		m.ValueJSON = attrs&attrValueJSON != 0
		out = append(out, m)
		p = p[12+length:]
	}
	return out, nil
}
