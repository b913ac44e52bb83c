package offsetdb

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strconv"
	"time"
)

// The file store's log is text, one record a line, so that an operator can
// read it with less(1):
//
//	<crc32c of the JSON, 8 hex digits> <JSON record>\n
//
// for example
//
//	5f0c2a91 {"g":"payments","t":"orders","p":3,"n":1042,"b":"member-1","at":1732500000000000000}
//
// A record with "r":true is a reset (sets the offset); any other record keeps
// the greater offset, exactly like a commit.

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// fileRecord is one line of the log.
type fileRecord struct {
	Group     string `json:"g"`
	Topic     string `json:"t"`
	Partition int    `json:"p"`
	Next      int64  `json:"n"`
	By        string `json:"b,omitempty"`
	At        int64  `json:"at"` // Unix nanoseconds, UTC
	Reset     bool   `json:"r,omitempty"`
}

func recordOf(o Offset, reset bool) fileRecord {
	return fileRecord{Group: o.Group, Topic: o.Topic, Partition: o.Partition, Next: o.Next,
		By: o.CommittedBy, At: o.CommittedAt.UnixNano(), Reset: reset}
}

func (r fileRecord) offset() Offset {
	return Offset{Group: r.Group, Topic: r.Topic, Partition: r.Partition, Next: r.Next,
		CommittedBy: r.By, CommittedAt: time.Unix(0, r.At).UTC()}
}

// encodeRecord appends one framed line to buf.
func encodeRecord(buf []byte, r fileRecord) []byte {
	js, err := json.Marshal(r)
	if err != nil {
		panic(err) // strings and integers only: cannot fail
	}
	var crc [8]byte
	hex := strconv.AppendUint(crc[:0], uint64(crc32.Checksum(js, crcTable)), 16)
	for i := len(hex); i < 8; i++ {
		buf = append(buf, '0')
	}
	buf = append(buf, hex...)
	buf = append(buf, ' ')
	buf = append(buf, js...)
	return append(buf, '\n')
}

// errBadRecord marks a line that is torn or fails its checksum.
var errBadRecord = errors.New("bad record")

// decodeRecord parses one line without its newline.
func decodeRecord(line []byte) (fileRecord, error) {
	var r fileRecord
	if len(line) < 10 || line[8] != ' ' {
		return r, fmt.Errorf("%w: too short or no checksum", errBadRecord)
	}
	want, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return r, fmt.Errorf("%w: checksum %q", errBadRecord, line[:8])
	}
	js := line[9:]
	if got := crc32.Checksum(js, crcTable); uint64(got) != want {
		return r, fmt.Errorf("%w: checksum %08x, want %08x", errBadRecord, got, want)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("%w: %w", errBadRecord, err)
	}
	if err := validStored(r.offset()); err != nil {
		return r, fmt.Errorf("%w: %w", errBadRecord, err)
	}
	return r, nil
}

// scanLog reads records from rd, calling apply for each valid one. It
// returns the byte length of the valid prefix. A bad or unterminated record
// is tolerated only at the tail (a torn write): torn reports its position. A
// bad record followed by a valid one is corruption, not a torn write, and is
// an error: truncating there would lose acknowledged offsets.
func scanLog(rd io.Reader, apply func(fileRecord)) (valid int64, torn error, err error) {
	br := bufio.NewReaderSize(rd, 64<<10)
	var pos int64
	var firstBad error
	var badAt int64
	for {
		line, rerr := br.ReadBytes('\n')
		if len(line) == 0 && rerr == io.EOF {
			break
		}
		if rerr != nil && rerr != io.EOF {
			return 0, nil, rerr
		}
		start := pos
		pos += int64(len(line))
		var rec fileRecord
		var derr error
		if line[len(line)-1] != '\n' {
			derr = fmt.Errorf("%w: no newline", errBadRecord)
		} else {
			rec, derr = decodeRecord(line[:len(line)-1])
		}
		if derr != nil {
			if firstBad == nil {
				firstBad, badAt = derr, start
			}
			continue
		}
		if firstBad != nil {
			return 0, nil, fmt.Errorf("record at byte %d: %w, but valid records follow (corruption, not a torn write)", badAt, firstBad)
		}
		apply(rec)
		valid = pos
	}
	if firstBad != nil {
		return valid, fmt.Errorf("torn tail at byte %d: %w", badAt, firstBad), nil
	}
	return valid, nil, nil
}
