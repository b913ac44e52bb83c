package dedupe

// On-disk format.
//
// A dedupe directory holds files named "%020d.dedupe": the unix milliseconds at which the file
// was created, bumped by one when needed so that names are unique and strictly increasing.
// Sorting the names sorts the files by age. Other names in the directory are left alone.
//
// A file is a sequence of framed entries and nothing else (no file header):
//
//	offset  size  field
//	0       4     payload length n, uint32 little-endian, 1 <= n <= 16 MiB
//	4       4     CRC-32C (Castagnoli) of bytes 0..3 followed by the payload
//	8       n     payload
//
// The payload of format version 1:
//
//	1 byte    format version (1)
//	16 bytes  key
//	8 bytes   fingerprint, uint64 little-endian
//	8 bytes   time, unix milliseconds, int64 little-endian
//	uvarint   number of runs r
//	r times:  uvarint partition (<= MaxInt32), uvarint first offset (<= MaxInt64),
//	          uvarint count (>= 1, first+count-1 <= MaxInt64)
//
// A run stands for offsets first, first+1, ..., first+count-1 of one partition. Runs are in
// request order, so interleaved partitions give several runs; Entry.Offsets is the runs expanded
// one after the other. The payload ends exactly after the last run. An entry expands to at most
// maxOffsets offsets.
//
// Recovery reads a file from its start (the checkpointed file up to the checkpoint's size) and
// stops at the first entry that is cut short (torn), fails its CRC or does not decode. Within
// what the checkpoint covers that is damage (Open, package comment); past it, the bytes are cut.
// An entry with a valid CRC and an unknown version was written by a newer Imago: Open refuses to
// touch it.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

const (
	frameHeaderSize = 8
	formatVersion   = 1
	// fixedPayload is the payload size without the runs: version, key, fingerprint, time.
	fixedPayload = 1 + 16 + 8 + 8
	// maxPayload is the sanity limit on one entry; a larger length is corruption.
	maxPayload = 16 << 20
	// maxOffsets bounds the offsets of one entry (what Get expands into memory).
	maxOffsets = 1 << 24
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errTorn    = errors.New("torn entry")
	errCorrupt = errors.New("corrupt entry")
	errVersion = errors.New("entry has an unknown format version (written by a newer Imago?)")
)

// run is a stretch of consecutive offsets of one partition.
type run struct {
	first     int64
	partition int32
	count     int32
}

// record is an entry as kept in memory: the offsets as runs. A record is never modified after
// it is built, so Get may expand its runs without holding the lock.
type record struct {
	fp   uint64
	time int64
	seen int64 // in memory only: the monotonic reading (ms) at which time was now (seenAt)
	runs []run
}

// makeRuns encodes offsets as maximal runs, in request order. Partitions and offsets must not be
// negative.
// maxRunBytes is the most one run takes in a frame: a partition (an int32, 5 bytes as a
// uvarint), a first offset (10) and a count (at most maxOffsets: 4).
const maxRunBytes = 5 + 10 + 4

// Fits reports whether an entry of n offsets that change partition runs-1 times can be
// remembered: Add refuses one with more offsets than maxOffsets or a frame larger than
// maxPayload. It counts every run at its largest, so an entry that fits is never refused for
// its size. The broker checks a request with an Idempotency-Key before appending it: a key
// that cannot be remembered must not be accepted.
func Fits(n, runs int) bool {
	const fixed = 1 + len(Key{}) + 8 + 8 + binary.MaxVarintLen64
	return n <= maxOffsets && runs <= (maxPayload-fixed)/maxRunBytes
}

func makeRuns(offs []Position) ([]run, error) {
	if len(offs) > maxOffsets {
		return nil, fmt.Errorf("%d offsets, more than the limit of %d", len(offs), maxOffsets)
	}
	n := 0
	for i, p := range offs {
		if p.Partition < 0 || p.Offset < 0 {
			return nil, fmt.Errorf("offset %d: negative position (partition %d, offset %d)", i, p.Partition, p.Offset)
		}
		if i == 0 || !follows(offs[i-1], p) {
			n++
		}
	}
	if n == 0 {
		return nil, nil
	}
	runs := make([]run, 0, n)
	for i, p := range offs {
		if i > 0 && follows(offs[i-1], p) {
			runs[len(runs)-1].count++
			continue
		}
		runs = append(runs, run{first: p.Offset, partition: p.Partition, count: 1})
	}
	return runs, nil
}

// follows reports whether b is the offset right after a in the same partition.
func follows(a, b Position) bool {
	return a.Partition == b.Partition && a.Offset != math.MaxInt64 && b.Offset == a.Offset+1
}

// expand returns the offsets that runs stand for, in a new slice (nil for no runs).
func expand(runs []run) []Position {
	total := 0
	for _, r := range runs {
		total += int(r.count)
	}
	if total == 0 {
		return nil
	}
	out := make([]Position, 0, total)
	for _, r := range runs {
		for i := int64(0); i < int64(r.count); i++ {
			out = append(out, Position{Partition: r.partition, Offset: r.first + i})
		}
	}
	return out
}

func equalRuns(a, b []run) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// encodeFrame appends the framed entry for k and rec to dst.
func encodeFrame(dst []byte, k Key, rec record) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeaderSize)...)
	dst = append(dst, formatVersion)
	dst = append(dst, k[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, rec.fp)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(rec.time))
	dst = binary.AppendUvarint(dst, uint64(len(rec.runs)))
	for _, r := range rec.runs {
		dst = binary.AppendUvarint(dst, uint64(r.partition))
		dst = binary.AppendUvarint(dst, uint64(r.first))
		dst = binary.AppendUvarint(dst, uint64(r.count))
	}
	frame := dst[start:]
	binary.LittleEndian.PutUint32(frame[0:4], uint32(len(frame)-frameHeaderSize))
	binary.LittleEndian.PutUint32(frame[4:8], frameCRC(frame[0:4], frame[frameHeaderSize:]))
	return dst
}

func frameCRC(length, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(length, castagnoli), castagnoli, payload)
}

// payloadLen validates a frame header and returns the payload length it announces.
func payloadLen(hdr []byte) (int, error) {
	n := binary.LittleEndian.Uint32(hdr[0:4])
	if n == 0 || n > maxPayload {
		return 0, fmt.Errorf("%w: payload length %d outside 1..%d", errCorrupt, n, maxPayload)
	}
	return int(n), nil
}

// decodeFrame decodes the framed entry at the start of b and returns it with the number of bytes
// it takes. errTorn means b ends inside the entry.
func decodeFrame(b []byte) (Key, record, int, error) {
	if len(b) < frameHeaderSize {
		return Key{}, record{}, 0, fmt.Errorf("%w: %d header bytes of %d", errTorn, len(b), frameHeaderSize)
	}
	n, err := payloadLen(b)
	if err != nil {
		return Key{}, record{}, 0, err
	}
	if len(b)-frameHeaderSize < n {
		return Key{}, record{}, 0, fmt.Errorf("%w: %d payload bytes of %d", errTorn, len(b)-frameHeaderSize, n)
	}
	k, rec, err := decodeChecked(b[:frameHeaderSize], b[frameHeaderSize:frameHeaderSize+n])
	if err != nil {
		return Key{}, record{}, 0, err
	}
	return k, rec, frameHeaderSize + n, nil
}

// decodeChecked verifies the CRC of a complete frame (header and payload) and decodes the payload.
func decodeChecked(hdr, payload []byte) (Key, record, error) {
	if want, got := binary.LittleEndian.Uint32(hdr[4:8]), frameCRC(hdr[0:4], payload); want != got {
		return Key{}, record{}, fmt.Errorf("%w: crc %08x, stored %08x", errCorrupt, got, want)
	}
	return decodePayload(payload)
}

// decodePayload decodes an entry's payload whose CRC has been checked.
func decodePayload(p []byte) (Key, record, error) {
	var k Key
	if len(p) < 1 {
		return k, record{}, fmt.Errorf("%w: empty payload", errCorrupt)
	}
	if p[0] != formatVersion {
		return k, record{}, fmt.Errorf("%w: version %d", errVersion, p[0])
	}
	if len(p) < fixedPayload+1 {
		return k, record{}, fmt.Errorf("%w: payload of %d bytes is too short", errCorrupt, len(p))
	}
	copy(k[:], p[1:17])
	rec := record{
		fp:   binary.LittleEndian.Uint64(p[17:25]),
		time: int64(binary.LittleEndian.Uint64(p[25:33])),
	}
	p = p[fixedPayload:]
	nruns, w := binary.Uvarint(p)
	if w <= 0 {
		return k, record{}, fmt.Errorf("%w: bad run count", errCorrupt)
	}
	p = p[w:]
	if nruns > uint64(len(p))/3 { // a run takes at least 3 bytes
		return k, record{}, fmt.Errorf("%w: %d runs cannot fit in %d bytes", errCorrupt, nruns, len(p))
	}
	if nruns > 0 {
		rec.runs = make([]run, nruns)
	}
	var total uint64
	for i := range rec.runs {
		var part, first, count uint64
		for _, v := range []*uint64{&part, &first, &count} {
			x, w := binary.Uvarint(p)
			if w <= 0 {
				return k, record{}, fmt.Errorf("%w: run %d: bad varint", errCorrupt, i)
			}
			*v, p = x, p[w:]
		}
		switch {
		case part > math.MaxInt32:
			return k, record{}, fmt.Errorf("%w: run %d: partition %d", errCorrupt, i, part)
		case first > math.MaxInt64:
			return k, record{}, fmt.Errorf("%w: run %d: offset %d", errCorrupt, i, first)
		case count == 0 || count > maxOffsets-total:
			return k, record{}, fmt.Errorf("%w: run %d: count %d", errCorrupt, i, count)
		case count-1 > math.MaxInt64-first:
			return k, record{}, fmt.Errorf("%w: run %d: offsets overflow", errCorrupt, i)
		}
		total += count
		rec.runs[i] = run{first: int64(first), partition: int32(part), count: int32(count)}
	}
	if len(p) != 0 {
		return k, record{}, fmt.Errorf("%w: %d bytes after the last run", errCorrupt, len(p))
	}
	return k, rec, nil
}
