package xa

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// Decision-log records. Every record is a full snapshot of one global transaction (its
// status, client id and request digest, times, reason and branches), so replay keeps the last
// record per transaction and compaction rewrites exactly those.
//
// Frame (little endian):
//
//	u32 payload length | u32 CRC-32C of the payload | payload
//
// Payload:
//
//	u8 version (1 or 2) | u8 kind | u8 status | str gtrid | str client id |
//	[version 2 only: 32 bytes digest] |
//	varint created | varint decided | varint finished | varint deadline (unix ns, 0 = none) |
//	str code | str message | str by | uvarint branch count | branches
//
// where str is a uvarint length and the bytes, and a branch is str resource | u8 state |
// u8 flags (bit 0: a phase-2 commit was sent). The digest is the SHA-256 of the
// transaction's BeginOptions.Digest (txState.digest), which a repeat of its client id is
// checked against after a restart too. A record with a digest is written as version 2, any
// other as version 1, byte for byte as before version 2 existed; a version-1 record (also one
// written before) decodes with no digest: "unknown", and a repeat of its id is answered as a
// duplicate whatever its work.

type recKind uint8

const (
	recPreparing recKind = 1 + iota // before the first PREPARE
	recCommit                       // the commit decision, fsync'd before the first phase-2 commit
	recRollback                     // the rollback decision
	recDone                         // every branch answered; the status is final
	recResolve                      // an operator's decision on an in_doubt transaction
	recInDoubt                      // a heuristic hazard was found
	recSnapshot                     // written by compaction
)

const (
	recordVersion    = 1 // a record without a digest
	recordVersionDig = 2 // a record with a digest
	digestLen        = 32
	frameHeader      = 8
	maxRecordPayload = 16 << 10
	maxClientIDLen   = 128
	maxMessageLen    = 1024
	maxByLen         = 128
	maxCodeLen       = 64
	maxBranches      = 32
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Status is a global transaction's status.
type Status string

// Statuses of a global transaction.
const (
	StatusActive      Status = "active"
	StatusPreparing   Status = "preparing"
	StatusCommitting  Status = "committing"
	StatusCommitted   Status = "committed"
	StatusRollingBack Status = "rolling_back"
	StatusRolledBack  Status = "rolled_back"
	StatusInDoubt     Status = "in_doubt"
)

var statusCodes = []Status{"", StatusActive, StatusPreparing, StatusCommitting, StatusCommitted, StatusRollingBack, StatusRolledBack, StatusInDoubt}

// Final reports whether no further change is expected (in_doubt waits for Resolve).
func (s Status) Final() bool { return s == StatusCommitted || s == StatusRolledBack }

// BranchState is a branch's state as the coordinator knows it.
type BranchState string

// Branch states.
const (
	BranchActive     BranchState = "active"
	BranchPrepared   BranchState = "prepared"
	BranchReadOnly   BranchState = "read_only"
	BranchCommitted  BranchState = "committed"
	BranchRolledBack BranchState = "rolled_back"
	BranchFailed     BranchState = "failed"    // prepare failed (the resource rolled it back)
	BranchHeuristic  BranchState = "heuristic" // its outcome differs from the decision
)

var branchCodes = []BranchState{"", BranchActive, BranchPrepared, BranchReadOnly, BranchCommitted, BranchRolledBack, BranchFailed, BranchHeuristic}

func codeOf[T comparable](table []T, v T) uint8 {
	for i, t := range table {
		if t == v {
			return uint8(i)
		}
	}
	return 0
}

type recBranch struct {
	Resource   string
	State      BranchState
	CommitSent bool
}

type record struct {
	Kind     recKind
	Status   Status
	Gtrid    string
	ClientID string
	Digest   string // digestLen bytes (the SHA-256 of BeginOptions.Digest), or "" when unknown
	Created  time.Time
	Decided  time.Time
	Finished time.Time
	Deadline time.Time
	Code     string
	Message  string
	By       string
	Branches []recBranch
}

// newest returns the latest of t and the times r carries (openAge).
func (r record) newest(t time.Time) time.Time {
	for _, u := range [...]time.Time{r.Created, r.Decided, r.Finished} {
		if u.After(t) {
			t = u
		}
	}
	return t
}

var errBadRecord = errors.New("bad decision-log record")

// errNewerRecord: a frame whose checksum holds but whose version this build does not know. It
// was written by a newer version of Imago, so it is neither torn nor corrupt: cutting it as a
// torn tail would drop decisions. The file log refuses to open on it.
var errNewerRecord = errors.New("decision-log record of a newer version")

func putStr(b []byte, s string, max int) []byte {
	if len(s) > max {
		s = s[:max]
	}
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func putTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

// appendRecord appends r's frame to b.
func appendRecord(b []byte, r *record) []byte {
	start := len(b)
	b = append(b, make([]byte, frameHeader)...)
	version := byte(recordVersion)
	if len(r.Digest) == digestLen {
		version = recordVersionDig
	}
	b = append(b, version, byte(r.Kind), codeOf(statusCodes, r.Status))
	b = putStr(b, r.Gtrid, gtridLen)
	b = putStr(b, r.ClientID, maxClientIDLen)
	if version == recordVersionDig {
		b = append(b, r.Digest...)
	}
	b = putTime(b, r.Created)
	b = putTime(b, r.Decided)
	b = putTime(b, r.Finished)
	b = putTime(b, r.Deadline)
	b = putStr(b, r.Code, maxCodeLen)
	b = putStr(b, r.Message, maxMessageLen)
	b = putStr(b, r.By, maxByLen)
	n := len(r.Branches)
	if n > maxBranches {
		n = maxBranches
	}
	b = binary.AppendUvarint(b, uint64(n))
	for _, br := range r.Branches[:n] {
		b = putStr(b, br.Resource, maxResourceLen)
		var flags byte
		if br.CommitSent {
			flags |= 1
		}
		b = append(b, codeOf(branchCodes, br.State), flags)
	}
	payload := b[start+frameHeader:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(payload, crcTable))
	return b
}

// decodeFrame reads one frame from the start of buf and returns its record and size. A
// short buffer, a bad CRC or a malformed payload is an error (the caller cuts the log there).
func decodeFrame(buf []byte) (record, int, error) {
	if len(buf) < frameHeader {
		return record{}, 0, fmt.Errorf("%w: %d bytes left, a frame header is %d", errBadRecord, len(buf), frameHeader)
	}
	n := binary.LittleEndian.Uint32(buf)
	if n == 0 || n > maxRecordPayload {
		return record{}, 0, fmt.Errorf("%w: payload length %d", errBadRecord, n)
	}
	if uint64(len(buf)-frameHeader) < uint64(n) {
		return record{}, 0, fmt.Errorf("%w: torn frame (%d of %d payload bytes)", errBadRecord, len(buf)-frameHeader, n)
	}
	payload := buf[frameHeader : frameHeader+int(n)]
	if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(buf[4:]) {
		return record{}, 0, fmt.Errorf("%w: CRC mismatch", errBadRecord)
	}
	r, err := decodePayload(payload)
	if err != nil {
		return record{}, 0, err
	}
	return r, frameHeader + int(n), nil
}

type reader struct {
	b   []byte
	err error
}

func (d *reader) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", errBadRecord, what)
	}
}

func (d *reader) byte1(what string) byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *reader) str(what string, max int) string {
	if d.err != nil {
		return ""
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > uint64(max) || uint64(len(d.b)-k) < n {
		d.fail(what)
		return ""
	}
	s := string(d.b[k : k+int(n)])
	d.b = d.b[k+int(n):]
	return s
}

func (d *reader) fixed(what string, n int) string {
	if d.err != nil || len(d.b) < n {
		d.fail(what)
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *reader) time(what string) time.Time {
	if d.err != nil {
		return time.Time{}
	}
	v, k := binary.Varint(d.b)
	if k <= 0 {
		d.fail(what)
		return time.Time{}
	}
	d.b = d.b[k:]
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v)
}

func decodePayload(p []byte) (record, error) {
	d := &reader{b: p}
	var r record
	v := d.byte1("version")
	if d.err == nil && v > recordVersionDig {
		return record{}, fmt.Errorf("%w: version %d (this build reads 1 to %d)", errNewerRecord, v, recordVersionDig)
	}
	if d.err == nil && v != recordVersion && v != recordVersionDig {
		return record{}, fmt.Errorf("%w: version %d", errBadRecord, v)
	}
	r.Kind = recKind(d.byte1("kind"))
	st := d.byte1("status")
	r.Gtrid = d.str("gtrid", gtridLen)
	r.ClientID = d.str("client id", maxClientIDLen)
	if v == recordVersionDig {
		r.Digest = d.fixed("digest", digestLen)
	}
	r.Created = d.time("created")
	r.Decided = d.time("decided")
	r.Finished = d.time("finished")
	r.Deadline = d.time("deadline")
	r.Code = d.str("code", maxCodeLen)
	r.Message = d.str("message", maxMessageLen)
	r.By = d.str("by", maxByLen)
	if d.err != nil {
		return record{}, d.err
	}
	n, k := binary.Uvarint(d.b)
	if k <= 0 || n > maxBranches {
		return record{}, fmt.Errorf("%w: branch count", errBadRecord)
	}
	d.b = d.b[k:]
	for i := uint64(0); i < n; i++ {
		var br recBranch
		br.Resource = d.str("branch resource", maxResourceLen)
		bs := d.byte1("branch state")
		flags := d.byte1("branch flags")
		if d.err != nil {
			return record{}, d.err
		}
		if int(bs) >= len(branchCodes) || bs == 0 || flags > 1 {
			return record{}, fmt.Errorf("%w: branch state %d flags %d", errBadRecord, bs, flags)
		}
		br.State, br.CommitSent = branchCodes[bs], flags&1 != 0
		r.Branches = append(r.Branches, br)
	}
	switch {
	case len(d.b) != 0:
		return record{}, fmt.Errorf("%w: %d trailing bytes", errBadRecord, len(d.b))
	case r.Kind < recPreparing || r.Kind > recSnapshot:
		return record{}, fmt.Errorf("%w: kind %d", errBadRecord, r.Kind)
	case int(st) >= len(statusCodes) || st == 0:
		return record{}, fmt.Errorf("%w: status %d", errBadRecord, st)
	case len(r.Gtrid) != gtridLen || !isLowerHex(r.Gtrid):
		return record{}, fmt.Errorf("%w: gtrid %q", errBadRecord, r.Gtrid)
	}
	r.Status = statusCodes[st]
	return r, nil
}

// resolveRecord is the record of an operator's decision d on st (in_doubt): st as it becomes
// once the record is durable. The caller holds c.mu.
func resolveRecord(st *txState, d Decision, by string, now time.Time) record {
	r := st.snapshot(recResolve)
	r.By, r.Decided = by, now
	r.Code, r.Message = "resolved_"+string(d), fmt.Sprintf("resolved %s by %s at %s", d, by, now.UTC().Format(time.RFC3339))
	r.Status = StatusCommitting
	if d == DecideRollback {
		r.Status = StatusRollingBack
	}
	for i := range r.Branches {
		r.Branches[i].CommitSent = true
	}
	return r
}
