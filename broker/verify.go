package broker

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Torn tail or corruption. A crash can only damage the end of what was being written, so a
// batch that fails verification is a torn tail, which recovery may cut, only when no valid
// batch follows it anywhere in the log. A bad batch followed by a valid one is corruption (a
// flipped bit on the disk, a firmware fault): the batches after it were written, fsync'd and
// acknowledged, and cutting there would silently delete them. Then start-up refuses with a
// *CorruptionError naming the segment file, the byte position, what failed and how many valid
// batches follow; nothing is cut. `imago log verify` reports the same without starting.
//
// "Valid" is strict: a header whose CRC matches, and records whose CRCs match and whose count
// is the header's. Finding one by scanning byte by byte through garbage is what etcd's WAL does
// in spirit (a torn entry is only ever the final write); random bytes pass both checks with a
// probability near 2^-64.
//
// A power loss can break the rule's premise in one place: the last write(2), whose fdatasync
// had not returned, may reach the disk with holes (pages are written back in no set order and a
// file system may show never-written blocks as zeros), so a zeroed batch can be followed by
// valid batches of the same flush. None of them was acknowledged, and cutting would be safe;
// start-up still refuses, deliberately. After its last fsync returns the broker writes nothing
// more, so the disk holds no record of whether the final flush was acknowledged: the same
// bytes are left by a flush that was fsync'd, acknowledged and then damaged (a lost or
// misdirected write, a firmware fault returning zeroed sectors). Any rule that cuts there —
// "only the last flush can be undurable", "zeros are a hole" — would in that case delete
// acknowledged batches silently, which is the one thing recovery must never do. Refusing costs
// availability, not data: `imago log repair --drop-corrupt-batch` turns the bad batch into a gap
// and keeps the valid ones after it (their producers were never answered; a retry with the same
// Idempotency-Key answers "duplicate", as after any crash between fsync and answer).

// CorruptionError reports a damaged batch in the commit log that valid batches follow.
type CorruptionError struct {
	Segment    string // path of the segment file holding the damaged batch
	FileOffset int64  // byte position of the damaged batch in that file
	Position   int64  // its log position
	Reason     string // what failed: header CRC, record CRC, length, ...
	ValidAfter int    // valid batches found after it, read one after another from NextValid
	NextValid  int64  // log position of the first valid batch after it
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("commit log corrupt in %s at byte %d (log position %d): %s; %d valid batches follow (the first at log position %d), "+
		"so this is not a torn tail and nothing was cut", e.Segment, e.FileOffset, e.Position, e.Reason, e.ValidAfter, e.NextValid)
}

func (e *CorruptionError) Unwrap() error { return ErrCorrupt }

// checkTail is called by recovery when the batch at pos failed verification (why) before end.
// It returns a *CorruptionError when a valid batch follows, nil when the rest is a torn tail.
func (b *Broker) checkTail(pos, end int64, why error) error {
	return corruptionAt(b.log, pos, end, why)
}

func corruptionAt(l *commitLog, pos, end int64, why error) error {
	next, ok, err := nextValidBatch(l, pos+1, end)
	if err != nil {
		return fmt.Errorf("scan the log after the bad batch at %d: %w", pos, err)
	}
	if !ok {
		return nil
	}
	n, _ := countValid(l, next, end)
	seg, off := l.locate(pos)
	return &CorruptionError{Segment: seg, FileOffset: off, Position: pos, Reason: strings.TrimPrefix(why.Error(), errTorn.Error()+": "),
		ValidAfter: n, NextValid: next}
}

// locate returns the file and the byte position in it of log position pos.
func (l *commitLog) locate(pos int64) (string, int64) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].base > pos }) - 1
	if i < 0 {
		return l.dir, pos
	}
	return filepath.Join(l.dir, segmentName(l.segs[i].base)), pos - l.segs[i].base
}

// validBatchAt reports the length of the whole, verified batch at pos, if there is one.
func validBatchAt(l *commitLog, pos, end int64) (int64, bool) {
	if end-pos < batchHeaderSize {
		return 0, false
	}
	hdr := make([]byte, raftHeaderSize)
	if l.readAt(hdr[:batchHeaderSize], pos) != nil {
		return 0, false
	}
	if hdr[8] == raftMagic {
		if end-pos < raftHeaderSize || l.readAt(hdr, pos) != nil {
			return 0, false
		}
	} else {
		hdr = hdr[:batchHeaderSize]
	}
	h, err := parseBatchHeader(hdr)
	if err != nil || int64(h.Length) > end-pos {
		return 0, false
	}
	raw := make([]byte, h.Length)
	if l.readAt(raw, pos) != nil {
		return 0, false
	}
	if _, err := decodeBatch(raw, nil); err != nil {
		return 0, false
	}
	return int64(h.Length), true
}

// nextValidBatch finds the first position in [from, end) where a whole, verified batch starts.
// It reads in large chunks and checks the magic byte and the header CRC before anything else.
func nextValidBatch(l *commitLog, from, end int64) (int64, bool, error) {
	const chunk = 4 << 20
	buf := make([]byte, chunk+raftHeaderSize)
	for at := from; at+batchHeaderSize <= end; at += chunk {
		n := min(int64(len(buf)), end-at)
		if err := l.readAt(buf[:n], at); err != nil {
			return 0, false, err
		}
		for i := int64(0); i+batchHeaderSize <= n && i < chunk; i++ {
			size := int64(batchHeaderSize)
			if buf[i+8] == raftMagic {
				size = raftHeaderSize // a replicated log's batches (raftlog.go)
			} else if buf[i+8] != batchMagic {
				continue
			}
			if i+size > n {
				continue
			}
			h := buf[i : i+size]
			if crc32.Checksum(h[8:], castagnoli) != binary.BigEndian.Uint32(h[4:]) {
				continue
			}
			if _, ok := validBatchAt(l, at+i, end); ok {
				return at + i, true, nil
			}
		}
	}
	return 0, false, nil
}

// countValid counts the valid batches read one after another from pos, and returns where the
// run stops (end, or the next bad batch).
func countValid(l *commitLog, pos, end int64) (int, int64) {
	n := 0
	for pos < end {
		size, ok := validBatchAt(l, pos, end)
		if !ok {
			break
		}
		n++
		pos += size
	}
	return n, pos
}

// LogReport is what VerifyLog found.
type LogReport struct {
	Segments int
	Start    int64 // log position of the first byte on disk
	End      int64 // log position after the last byte on disk
	Batches  int   // valid batches read from Start
	// TornBytes at the end fail verification and no valid batch follows them: a torn tail,
	// which the next start cuts (copying it to repair/).
	TornBytes int64
	// Corruption is set when a bad batch is followed by valid ones: start-up refuses.
	Corruption *CorruptionError
	// FailMark, when FailMarkCut > 0, is the durable end recorded after a failed write or
	// fsync (failmark.go): the next start cuts the FailMarkCut bytes after it, so the log is
	// verified only up to there.
	FailMark    int64
	FailMarkCut int64
}

// VerifyLog reads and verifies the whole commit log of the data directory dir without opening
// the broker (and without writing anything): every batch's header and record CRCs.
func VerifyLog(dir string) (LogReport, error) {
	l, err := openLogReadOnly(filepath.Join(dir, "log"))
	if err != nil {
		return LogReport{}, err
	}
	defer l.close()
	rep := LogReport{Segments: len(l.segs), Start: l.start(), End: l.end.Load()}
	pos, end := rep.Start, rep.End
	// Read the log as the next start will: after a failed write it first cuts at the recorded
	// durable end, so what lies beyond was never acknowledged and is not verified.
	if mark, set, err := readFailMark(dir); err != nil {
		return rep, err
	} else if set && mark < end {
		rep.FailMark, rep.FailMarkCut = mark, end-mark
		end = mark
	}
	rd := newLogReader(l, pos, end)
	for pos < end {
		raw, err := rd.batch(pos)
		var bv batchView
		if err == nil {
			bv, err = decodeBatch(raw, nil)
		}
		if err != nil {
			cerr := corruptionAt(l, pos, end, err)
			if ce, ok := cerr.(*CorruptionError); ok {
				rep.Corruption = ce
				return rep, nil
			} else if cerr != nil {
				return rep, cerr
			}
			rep.TornBytes = end - pos
			return rep, nil
		}
		rep.Batches++
		pos += int64(bv.Header.Length)
	}
	return rep, nil
}

// openLogReadOnly opens the segments of the log directory dir for reading only.
func openLogReadOnly(dir string) (*commitLog, error) {
	l := &commitLog{dir: dir}
	if err := l.openSegments(os.O_RDONLY); err != nil {
		return nil, err
	}
	return l, nil
}
