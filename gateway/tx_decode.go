package gateway

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"time"
	"unicode/utf8"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
)

// This file holds the decoder of transaction and XA request bodies: one JSON object whose
// fields are drawn from xid, flags, timeout_ms, one_phase, decision and messages, each
// endpoint allowing and requiring its own. It reuses the produce parser's primitives
// (produce_decode.go), so a message of a transaction follows exactly the produce rules, plus
// a required "topic".
//
// Error codes (also in api/openapi.yaml):
//   - invalid_json: the body is not UTF-8 JSON (a transport problem, never an XA code);
//   - on /v1/xa/*, every problem with the verb's own arguments (xid, flags, timeout_ms,
//     one_phase, decision, unknown or repeated top-level fields) is 400 XAER_INVAL, so that an
//     XAResource can raise it as an XAException; on /v1/transactions it is invalid_field;
//   - "messages" and everything inside it is decoded as in produce: invalid_field, and
//     invalid_name for a topic name that is not ^[A-Za-z0-9._-]{1,249}$.

// txField bits name the top-level fields of a transaction or XA body.
const (
	tfXid = 1 << iota
	tfFlags
	tfTimeout
	tfOnePhase
	tfDecision
	tfMessages
	tfEnd
	tfPrepare
)

var txFieldNames = []string{"xid", "flags", "timeout_ms", "one_phase", "decision", "messages", "end", "prepare"}

// maxTimeoutMS is the longest transaction or branch timeout (the broker's limit: one hour).
const maxTimeoutMS = 3_600_000

// MaxTimeout is the longest timeout_ms a request may ask for (global transactions, broker
// transactions and branches).
const MaxTimeout = maxTimeoutMS * time.Millisecond

// txSpec is what one endpoint accepts.
type txSpec struct {
	allowed  int    // tf* bits the body may hold
	required int    // tf* bits it must hold
	xa       bool   // argument errors are XAER_INVAL rather than invalid_field
	example  string // a valid body, for messages
}

// txBody is a decoded body. Message keys and JSON values alias the request body.
type txBody struct {
	seen      int
	xid       broker.Xid
	flags     string
	timeoutMS int64
	onePhase  bool
	decision  string
	msgs      []broker.TxMessage
	end       string // start only: end the branch with these flags after its messages
	prepare   bool   // start only: prepare after end
}

// decodeTxBody parses body under spec. An empty body is an empty object when spec requires
// nothing.
func decodeTxBody(body []byte, spec txSpec) (txBody, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		if spec.required == 0 {
			return txBody{}, nil
		}
		return txBody{}, newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body is empty; send %s", spec.example)
	}
	if !utf8.Valid(body) {
		return txBody{}, newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body is not valid UTF-8; JSON text must be UTF-8")
	}
	d := txDecoder{parser: parser{b: body}, spec: spec}
	out, err := d.body()
	if err != nil {
		if ae, ok := err.(*apiError); ok && ae.code != "invalid_json" && !json.Valid(body) {
			// A field error was seen before a syntax error further on: report the syntax.
			return txBody{}, jsonSyntaxError(body)
		}
		return txBody{}, err
	}
	return out, nil
}

type txDecoder struct {
	parser
	spec txSpec
}

// argError reports a bad argument of the verb: XAER_INVAL on XA endpoints, else invalid_field.
func (d *txDecoder) argError(field, format string, args ...any) *apiError {
	code := "invalid_field"
	if d.spec.xa {
		code = broker.XAERInval
	}
	return &apiError{status: http.StatusBadRequest, code: code, field: field,
		message: field + " " + fmt.Sprintf(format, args...)}
}

func (d *txDecoder) body() (txBody, error) {
	var out txBody
	d.ws()
	if c := d.peek(); c != '{' {
		return out, d.argError("body", "must be a JSON object such as %s", d.spec.example)
	}
	err := d.members(func(name []byte) error {
		bit := 0
		for i, n := range txFieldNames {
			if string(name) == n {
				bit = 1 << i
			}
		}
		if bit == 0 || d.spec.allowed&bit == 0 {
			return d.argError(string(name), "is not a known field; send %s", d.spec.example)
		}
		if out.seen&bit != 0 {
			return d.argError(string(name), "appears twice")
		}
		out.seen |= bit
		return d.field(bit, &out)
	})
	if err != nil {
		return out, err
	}
	d.ws()
	if d.i != len(d.b) {
		return out, d.syntax("the end of the body")
	}
	for i, n := range txFieldNames {
		if bit := 1 << i; d.spec.required&bit != 0 && out.seen&bit == 0 {
			if bit == tfMessages {
				return out, fieldError("messages", "is required: send %s", d.spec.example)
			}
			return out, d.argError(n, "is required: send %s", d.spec.example)
		}
	}
	return out, nil
}

func (d *txDecoder) field(bit int, out *txBody) error {
	var err error
	switch bit {
	case tfXid:
		out.xid, err = d.xid()
	case tfFlags:
		out.flags, err = d.word("flags")
	case tfDecision:
		out.decision, err = d.word("decision")
	case tfOnePhase:
		switch d.peek() {
		case 't':
			out.onePhase, err = true, d.literal("true")
		case 'f':
			err = d.literal("false")
		default:
			err = d.argError("one_phase", "must be true or false")
		}
	case tfTimeout:
		var n int64
		n, err = d.integer("timeout_ms", 0, maxTimeoutMS)
		out.timeoutMS = n
	case tfMessages:
		out.msgs, err = d.messages()
	case tfEnd:
		out.end, err = d.word("end")
	case tfPrepare:
		switch d.peek() {
		case 't':
			out.prepare, err = true, d.literal("true")
		case 'f':
			err = d.literal("false")
		default:
			err = d.argError("prepare", "must be true or false")
		}
	}
	return err
}

// word parses a string argument such as flags.
func (d *txDecoder) word(field string) (string, error) {
	if d.peek() != '"' {
		return "", d.argError(field, "must be a string")
	}
	s, err := d.str()
	return string(s), err
}

// integer parses an integer argument in [lo, hi].
func (d *txDecoder) integer(field string, lo, hi int64) (int64, error) {
	c := d.peek()
	if c != '-' && (c < '0' || c > '9') {
		return 0, d.argError(field, "must be an integer from %d to %d", lo, hi)
	}
	start := d.i
	if err := d.number(); err != nil {
		return 0, err
	}
	num := d.b[start:d.i]
	if bytes.ContainsAny(num, ".eE") {
		return 0, d.argError(field, "must be an integer from %d to %d, not %s", lo, hi, num)
	}
	neg := num[0] == '-'
	if neg {
		num = num[1:]
	}
	var n int64
	for _, c := range num {
		n = n*10 + int64(c-'0')
		if n > math.MaxInt32*int64(2) { // well past any limit used here; stops overflow
			break
		}
	}
	if neg {
		n = -n
	}
	if n < lo || n > hi {
		return 0, d.argError(field, "must be an integer from %d to %d, not %s", lo, hi, d.b[start:d.i])
	}
	return n, nil
}

// xid parses {"format_id": <int32 >= 0>, "gtrid": "<hex>", "bqual": "<hex>"} and checks the
// X/Open limits (1 to 64 bytes for gtrid and bqual).
func (d *txDecoder) xid() (broker.Xid, error) {
	var x broker.Xid
	const example = `{"format_id": 1, "gtrid": "<hex>", "bqual": "<hex>"}`
	if d.peek() != '{' {
		return x, d.argError("xid", "must be an object such as %s", example)
	}
	seen := 0
	err := d.members(func(name []byte) error {
		var bit int
		var err error
		switch string(name) {
		case "format_id":
			bit = 1
			n, err := d.integer("xid.format_id", 0, math.MaxInt32)
			if err != nil {
				return err
			}
			x.FormatID = int32(n)
		case "gtrid":
			bit = 2
			if x.Gtrid, err = d.xidPart("xid.gtrid"); err != nil {
				return err
			}
		case "bqual":
			bit = 4
			if x.Bqual, err = d.xidPart("xid.bqual"); err != nil {
				return err
			}
		default:
			return d.argError("xid."+string(name), "is not a known field; an xid is %s", example)
		}
		if seen&bit != 0 {
			return d.argError("xid."+string(name), "appears twice")
		}
		seen |= bit
		return nil
	})
	if err != nil {
		return x, err
	}
	for i, n := range []string{"format_id", "gtrid", "bqual"} {
		if seen&(1<<i) == 0 {
			return x, d.argError("xid."+n, "is required; an xid is %s", example)
		}
	}
	return x, nil
}

// xidPart parses a gtrid or bqual: hex text of 1 to 64 bytes.
func (d *txDecoder) xidPart(field string) ([]byte, error) {
	if d.peek() != '"' {
		return nil, d.argError(field, "must be a hex string")
	}
	s, err := d.str()
	if err != nil {
		return nil, err
	}
	if len(s) == 0 || len(s) > 2*broker.MaxXidPart {
		return nil, d.argError(field, "must be 1 to %d bytes (2 to %d hex digits), not %d hex digits", broker.MaxXidPart, 2*broker.MaxXidPart, len(s))
	}
	out := make([]byte, hex.DecodedLen(len(s)))
	if _, err := hex.Decode(out, s); err != nil {
		return nil, d.argError(field, "must be hex (an even number of digits 0-9, a-f): %v", err)
	}
	return out, nil
}

func (d *txDecoder) messages() ([]broker.TxMessage, error) {
	if d.peek() != '[' {
		return nil, fieldError("messages", `must be an array of messages such as [{"topic": "t", "value": ...}]`)
	}
	d.i++
	d.ws()
	if d.peek() == ']' {
		d.i++
		return nil, fieldError("messages", "must hold at least one message")
	}
	msgs := make([]broker.TxMessage, 0, 1)
	for idx := 0; ; idx++ {
		d.ws()
		m, err := d.message(idx)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
		c, err := d.next(",]", "',' or ']'")
		if err != nil {
			return nil, err
		}
		if c == ']' {
			return msgs, nil
		}
	}
}

// message parses one message of a transaction: the produce message fields plus "topic".
func (d *txDecoder) message(idx int) (broker.TxMessage, error) {
	m, topic, err := d.messageFields(idx, true)
	return broker.TxMessage{Topic: topic, Message: m}, err
}
