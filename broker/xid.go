package broker

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Xid identifies an XA branch: a format id, a global transaction id and a branch qualifier,
// each of the latter 1–64 bytes (the X/Open limits, which MySQL also uses).
type Xid struct {
	FormatID int32
	Gtrid    []byte
	Bqual    []byte
}

// MaxXidPart is the largest gtrid or bqual, in bytes.
const MaxXidPart = 64

// Validate checks the X/Open limits.
func (x Xid) Validate() error {
	if len(x.Gtrid) < 1 || len(x.Gtrid) > MaxXidPart {
		return xaErr(XAERInval, "gtrid must be 1 to %d bytes, got %d", MaxXidPart, len(x.Gtrid))
	}
	if len(x.Bqual) < 1 || len(x.Bqual) > MaxXidPart {
		return xaErr(XAERInval, "bqual must be 1 to %d bytes, got %d", MaxXidPart, len(x.Bqual))
	}
	if x.FormatID < 0 {
		return xaErr(XAERInval, "format_id must not be negative (-1 is the null xid)")
	}
	return nil
}

// String is the text protocol's txkey: XID:<format_id>:<gtrid hex>:<bqual hex>.
func (x Xid) String() string {
	// One allocation: the key is built for every XA verb.
	var sb strings.Builder
	sb.Grow(len("XID:") + 20 + 2 + 2*len(x.Gtrid) + 2*len(x.Bqual))
	var num [20]byte
	sb.WriteString("XID:")
	sb.Write(strconv.AppendInt(num[:0], int64(x.FormatID), 10))
	sb.WriteByte(':')
	writeHex(&sb, x.Gtrid)
	sb.WriteByte(':')
	writeHex(&sb, x.Bqual)
	return sb.String()
}

// writeHex writes b in lower-case hex, as hex.EncodeToString does.
func writeHex(sb *strings.Builder, b []byte) {
	const digits = "0123456789abcdef"
	for _, c := range b {
		sb.WriteByte(digits[c>>4])
		sb.WriteByte(digits[c&0x0f])
	}
}

// ParseXid parses the txkey form XID:<format_id>:<gtrid hex>:<bqual hex>.
func ParseXid(s string) (Xid, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 4 || parts[0] != "XID" {
		return Xid{}, xaErr(XAERInval, "xid %q: want XID:<format_id>:<gtrid hex>:<bqual hex>", s)
	}
	f, err := strconv.ParseInt(parts[1], 10, 32)
	if err != nil {
		return Xid{}, xaErr(XAERInval, "xid %q: format id is not a 32-bit integer", s)
	}
	g, err := hex.DecodeString(parts[2])
	if err != nil {
		return Xid{}, xaErr(XAERInval, "xid %q: gtrid is not hex", s)
	}
	bq, err := hex.DecodeString(parts[3])
	if err != nil {
		return Xid{}, xaErr(XAERInval, "xid %q: bqual is not hex", s)
	}
	x := Xid{FormatID: int32(f), Gtrid: g, Bqual: bq}
	return x, x.Validate()
}

// XA error codes, as in javax.transaction.xa.XAException and the X/Open XA specification.
const (
	XAERNota     = "XAER_NOTA"     // unknown xid
	XAERProto    = "XAER_PROTO"    // verb in the wrong state
	XAERDupID    = "XAER_DUPID"    // xid already exists
	XAERInval    = "XAER_INVAL"    // bad arguments
	XAERRMFail   = "XAER_RMFAIL"   // the resource manager cannot work now
	XAERRMErr    = "XAER_RMERR"    // an error in the resource manager
	XARBRollback = "XA_RBROLLBACK" // the branch was rolled back (marked rollback-only)
	XARBTimeout  = "XA_RBTIMEOUT"  // the branch was rolled back after its timeout
	XAHeurCom    = "XA_HEURCOM"    // heuristically committed
	XAHeurRB     = "XA_HEURRB"     // heuristically rolled back
	XAHeurHaz    = "XA_HEURHAZ"    // heuristic outcome unknown
	XAHeurMix    = "XA_HEURMIX"    // partly committed, partly rolled back
)

// XAError is an error with an XA code. The gateway maps codes to HTTP statuses.
type XAError struct {
	Code    string
	Message string
	err     error // the cause, when there is one (ErrBackpressure on a commit)
}

func (e *XAError) Error() string { return e.Code + ": " + e.Message }

// Unwrap returns the cause, so that callers can tell ErrBackpressure (nothing was written, the
// branch is as before the call) from a failed write.
func (e *XAError) Unwrap() error { return e.err }

func xaErr(code, format string, args ...any) *XAError {
	return &XAError{Code: code, Message: fmt.Sprintf(format, args...)}
}
