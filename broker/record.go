package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// On-disk framing. All integers are big-endian.
//
// A batch is what one produce request (or one internal event) writes; it is the unit of
// atomicity: recovery keeps a batch whole or cuts it whole.
//
//	batch header, 48 bytes
//	 0 u32  length of the whole batch, header included
//	 4 u32  CRC-32C of header bytes [8, 48)
//	 8 u8   magic (1)
//	 9 u8   type: 1 messages, 2 partition snapshot, 3 transaction (txlog.go), 4 gap (a
//	        corrupt batch dropped by the operator, logrepair.go: no records, zero padding)
//	10 u16  flags: bit 0 = has idempotency key
//	12 u32  record count
//	16 i64  broker timestamp, unix milliseconds
//	24 [16] idempotency key hash (zero without a key)
//	40 u64  request fingerprint (zero without a key)
//	48 ...  records, back to back; their sizes add up to length-48
//
// A record is one message:
//
//	 0 u32  length of the rest of the record (from byte 4)
//	 4 u32  CRC-32C of record bytes [8, 4+length): everything below
//	 8 u32  topic id
//	12 u32  partition
//	16 i64  offset
//	24 i64  broker timestamp, unix milliseconds
//	32 u8   attributes: bit 0 has key, bit 1 value is JSON text
//	33 u32  key length
//	37 u32  value length
//	41 u16  header count
//	43 ...  key, then headers (u16 name length, name, u32 value length, value), then value
//
// A replicated broker (cluster mode, raftlog.go) writes magic 2: the same header followed by
// the raft entry's term and index, 64 bytes in all, the CRC covering [8, 64):
//
//	48 u64  raft term
//	56 u64  raft index
//	64 ...  records (or, in a raft batch, the entry's raw data)
//
// Magic 2 adds two batch types: 6 topic (one record whose value is the topic's definition,
// replicate.go) and 7 raft (an entry that is not one of the broker's batches: the empty entry a
// new leader commits, or a membership change; flags bit 1 and 2 say which kind).
//
// In a snapshot batch (written first in every new segment) each record carries, in its
// offset field, the next offset of one partition, so a rebuild from any segment knows every
// partition's offsets even when older segments were deleted by retention.
const (
	batchHeaderSize  = 48
	recordHeaderSize = 43
	batchMagic       = 1

	// Replicated batches (magic 2) carry the raft term and index after the header.
	raftHeaderSize = 64
	raftMagic      = 2
	batchTopic     = 6
	batchRaft      = 7
	batchRetention = 8 // a replicated retention decision (retention_repl.go)

	batchMessages = 1
	batchSnapshot = 2
	batchGap      = 4

	batchFlagKey = 1

	attrHasKey    = 1
	attrValueJSON = 2

	// maxBatchBytes bounds a batch length read from disk; anything larger is corruption.
	maxBatchBytes = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errTorn = errors.New("torn or corrupt batch")

type batchHeader struct {
	Magic       uint8 // batchMagic (0 is taken for it) or raftMagic
	Length      uint32
	Type        uint8
	Flags       uint16
	Count       uint32
	Timestamp   int64
	Key         [16]byte
	Fingerprint uint64
	// RaftTerm and RaftIndex: magic 2 only.
	RaftTerm  uint64
	RaftIndex uint64
}

// size is the header's encoded size: where the batch's records start.
func (h batchHeader) size() int {
	if h.Magic == raftMagic {
		return raftHeaderSize
	}
	return batchHeaderSize
}

func putBatchHeader(b []byte, h batchHeader) {
	be := binary.BigEndian
	be.PutUint32(b[0:], h.Length)
	if h.Magic == raftMagic {
		b[8] = raftMagic
		be.PutUint64(b[48:], h.RaftTerm)
		be.PutUint64(b[56:], h.RaftIndex)
	} else {
		b[8] = batchMagic
	}
	b[9] = h.Type
	be.PutUint16(b[10:], h.Flags)
	be.PutUint32(b[12:], h.Count)
	be.PutUint64(b[16:], uint64(h.Timestamp))
	copy(b[24:40], h.Key[:])
	be.PutUint64(b[40:], h.Fingerprint)
	be.PutUint32(b[4:], crc32.Checksum(b[8:h.size()], castagnoli))
}

// parseBatchHeader checks a batch header's CRC and shape.
func parseBatchHeader(b []byte) (batchHeader, error) {
	if len(b) < batchHeaderSize {
		return batchHeader{}, fmt.Errorf("%w: header needs %d bytes, have %d", errTorn, batchHeaderSize, len(b))
	}
	be := binary.BigEndian
	h := batchHeader{
		Magic:       b[8],
		Length:      be.Uint32(b[0:]),
		Type:        b[9],
		Flags:       be.Uint16(b[10:]),
		Count:       be.Uint32(b[12:]),
		Timestamp:   int64(be.Uint64(b[16:])),
		Fingerprint: be.Uint64(b[40:]),
	}
	copy(h.Key[:], b[24:40])
	if len(b) < h.size() {
		return h, fmt.Errorf("%w: header needs %d bytes, have %d", errTorn, h.size(), len(b))
	}
	if crc32.Checksum(b[8:h.size()], castagnoli) != be.Uint32(b[4:]) {
		return h, fmt.Errorf("%w: header checksum mismatch", errTorn)
	}
	if h.Magic != batchMagic && h.Magic != raftMagic {
		return h, fmt.Errorf("%w: bad magic %d", errTorn, b[8])
	}
	if h.Length < uint32(h.size()) || h.Length > maxBatchBytes {
		return h, fmt.Errorf("%w: batch length %d", errTorn, h.Length)
	}
	switch {
	case h.Type == batchMessages:
	case h.Magic == batchMagic && (h.Type == batchSnapshot || h.Type == batchTx || h.Type == batchGap || h.Type == batchDecision):
	case h.Magic == raftMagic && (h.Type == batchTopic || h.Type == batchRaft || h.Type == batchTx || h.Type == batchDecision || h.Type == batchRetention):
	default:
		return h, fmt.Errorf("%w: batch type %d (magic %d)", errTorn, h.Type, h.Magic)
	}
	if h.Magic == raftMagic {
		h.RaftTerm = be.Uint64(b[48:])
		h.RaftIndex = be.Uint64(b[56:])
	}
	return h, nil
}

// recordSize is the encoded size of m's record.
func recordSize(m *Message) int {
	n := recordHeaderSize + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += 6 + len(h.Key) + len(h.Value)
	}
	return n
}

// appendRecord encodes one record at the end of dst and returns the extended slice and the CRC.
func appendRecord(dst []byte, topicID uint32, partition uint32, offset, ts int64, m *Message) ([]byte, uint32) {
	size := recordSize(m)
	start := len(dst)
	dst = grow(dst, size)
	b := dst[start : start+size]
	be := binary.BigEndian
	be.PutUint32(b[0:], uint32(size-4))
	be.PutUint32(b[8:], topicID)
	be.PutUint32(b[12:], partition)
	be.PutUint64(b[16:], uint64(offset))
	be.PutUint64(b[24:], uint64(ts))
	var attrs byte
	if m.Key != nil {
		attrs |= attrHasKey
	}
	if m.ValueJSON {
		attrs |= attrValueJSON
	}
	b[32] = attrs
	be.PutUint32(b[33:], uint32(len(m.Key)))
	be.PutUint32(b[37:], uint32(len(m.Value)))
	be.PutUint16(b[41:], uint16(len(m.Headers)))
	p := recordHeaderSize
	p += copy(b[p:], m.Key)
	for _, h := range m.Headers {
		be.PutUint16(b[p:], uint16(len(h.Key)))
		p += 2
		p += copy(b[p:], h.Key)
		be.PutUint32(b[p:], uint32(len(h.Value)))
		p += 4
		p += copy(b[p:], h.Value)
	}
	copy(b[p:], m.Value)
	crc := crc32.Checksum(b[8:], castagnoli)
	be.PutUint32(b[4:], crc)
	return dst, crc
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, 2*cap(b)+n)
	copy(nb, b)
	return nb
}

// record is a decoded record; its slices alias the buffer it was decoded from.
type record struct {
	TopicID   uint32
	Partition uint32
	Offset    int64
	Timestamp int64
	Attrs     byte
	Key       []byte
	Value     []byte
	Headers   []Header
	CRC       uint32
	Size      int // encoded size, length field included
}

// decodeRecord decodes the record at the start of b, verifying its length and CRC.
func decodeRecord(b []byte) (record, error) {
	var r record
	if len(b) < recordHeaderSize {
		return r, fmt.Errorf("%w: record needs %d bytes, have %d", errTorn, recordHeaderSize, len(b))
	}
	be := binary.BigEndian
	n := int(be.Uint32(b[0:])) + 4
	if n < recordHeaderSize || n > len(b) {
		return r, fmt.Errorf("%w: record length %d with %d bytes left", errTorn, n, len(b))
	}
	b = b[:n]
	r.CRC = be.Uint32(b[4:])
	if crc32.Checksum(b[8:], castagnoli) != r.CRC {
		return r, fmt.Errorf("%w: record checksum mismatch", errTorn)
	}
	r.Size = n
	r.TopicID = be.Uint32(b[8:])
	r.Partition = be.Uint32(b[12:])
	r.Offset = int64(be.Uint64(b[16:]))
	r.Timestamp = int64(be.Uint64(b[24:]))
	r.Attrs = b[32]
	klen := int(be.Uint32(b[33:]))
	vlen := int(be.Uint32(b[37:]))
	hcount := int(be.Uint16(b[41:]))
	p := recordHeaderSize
	if klen > n-p {
		return r, fmt.Errorf("%w: key length %d", errTorn, klen)
	}
	if r.Attrs&attrHasKey != 0 {
		r.Key = b[p : p+klen : p+klen]
	} else if klen != 0 {
		return r, fmt.Errorf("%w: key bytes without key flag", errTorn)
	}
	p += klen
	if hcount > 0 {
		r.Headers = make([]Header, hcount)
		for i := range r.Headers {
			if n-p < 2 {
				return r, fmt.Errorf("%w: header %d", errTorn, i)
			}
			hk := int(be.Uint16(b[p:]))
			p += 2
			if hk > n-p {
				return r, fmt.Errorf("%w: header %d name length %d", errTorn, i, hk)
			}
			r.Headers[i].Key = string(b[p : p+hk])
			p += hk
			if n-p < 4 {
				return r, fmt.Errorf("%w: header %d", errTorn, i)
			}
			hv := int(be.Uint32(b[p:]))
			p += 4
			if hv > n-p {
				return r, fmt.Errorf("%w: header %d value length %d", errTorn, i, hv)
			}
			r.Headers[i].Value = string(b[p : p+hv])
			p += hv
		}
	}
	if vlen != n-p {
		return r, fmt.Errorf("%w: value length %d, %d bytes left", errTorn, vlen, n-p)
	}
	r.Value = b[p:n:n]
	return r, nil
}

// batchView is a verified batch: its header and records.
type batchView struct {
	Header  batchHeader
	Records []record
}

// decodeBatch verifies the whole batch at the start of b: header CRC, every record's CRC, and
// that the records fill the batch exactly. It returns errTorn (wrapped) for anything else.
func decodeBatch(b []byte, recs []record) (batchView, error) {
	h, err := parseBatchHeader(b)
	if err != nil {
		return batchView{}, err
	}
	if int(h.Length) > len(b) {
		return batchView{}, fmt.Errorf("%w: batch of %d bytes, %d available", errTorn, h.Length, len(b))
	}
	body := b[h.size():h.Length]
	recs = recs[:0]
	if h.Type == batchRaft {
		if h.Count != 0 {
			return batchView{}, fmt.Errorf("%w: raft batch with %d records", errTorn, h.Count)
		}
		return batchView{Header: h, Records: recs}, nil
	}
	if h.Type == batchGap {
		if h.Count != 0 {
			return batchView{}, fmt.Errorf("%w: gap batch with %d records", errTorn, h.Count)
		}
		return batchView{Header: h, Records: recs}, nil
	}
	for len(body) > 0 {
		r, err := decodeRecord(body)
		if err != nil {
			return batchView{}, err
		}
		recs = append(recs, r)
		body = body[r.Size:]
	}
	if uint32(len(recs)) != h.Count {
		return batchView{}, fmt.Errorf("%w: %d records, header says %d", errTorn, len(recs), h.Count)
	}
	return batchView{Header: h, Records: recs}, nil
}
