package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/jsontext"
)

// This file holds the produce-request decoder: a small hand-written JSON parser for the one
// shape {"messages": [{"key", "value" | "value_base64", "headers", "partition"}]}. It is on the
// produce hot path, so it parses in one pass, allocates little (keys and JSON values alias the
// body), and names the exact field at fault in its errors (messages[2].partition).
//
// Rules (also in api/openapi.yaml):
//   - the body is a UTF-8 JSON object with exactly the field "messages", a non-empty array;
//   - a message holds exactly one of "value" (any JSON, null included; stored as its compact
//     text with ValueJSON set, returned verbatim) and "value_base64" (standard base64 with
//     padding);
//   - "key" is a string or null (null or absent: no key; "" is an empty key);
//   - "headers" is an object of string values or null; headers are stored sorted by name and
//     a name may appear once;
//   - "partition" is a non-negative integer or null (null or absent: the broker chooses);
//   - unknown fields and repeated fields are rejected, so a misspelt field never goes unseen.

// maxValueDepth bounds the nesting of a JSON value (encoding/json allows 10000).
const maxValueDepth = 1000

// decodeProduceRequest parses a produce request body. Keys and JSON values alias body;
// errors are *apiError with code invalid_json or invalid_field.
func decodeProduceRequest(body []byte) ([]broker.Message, error) {
	if !utf8.Valid(body) {
		return nil, newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body is not valid UTF-8; JSON text must be UTF-8")
	}
	p := parser{b: body}
	msgs, err := p.request()
	if err != nil {
		if ae, ok := err.(*apiError); ok && ae.code == "invalid_field" && !json.Valid(body) {
			// A type error was seen before a syntax error further on: report the syntax.
			return nil, jsonSyntaxError(body)
		}
		return nil, err
	}
	return msgs, nil
}

// jsonSyntaxError describes why body is not JSON, using encoding/json's message.
func jsonSyntaxError(body []byte) *apiError {
	var discard bytes.Buffer
	err := json.Compact(&discard, body)
	if se, ok := err.(*json.SyntaxError); ok {
		return newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body is not valid JSON: %s (at byte %d)", se.Error(), se.Offset)
	}
	return newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body is not valid JSON")
}

type parser struct {
	b []byte
	i int
}

func (p *parser) syntax(expected string) error {
	if p.i >= len(p.b) {
		if len(p.b) == 0 {
			return newError(http.StatusBadRequest, api.CodeInvalidJSON, `request body is empty; send {"messages": [{"value": ...}]}`)
		}
		return newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body is not valid JSON: it ends early, where %s was expected", expected)
	}
	return newError(http.StatusBadRequest, api.CodeInvalidJSON, "request body is not valid JSON: unexpected %q at byte %d, where %s was expected",
		rune(p.b[p.i]), p.i, expected)
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

// next skips whitespace and then expects one of the bytes in set, which it consumes.
func (p *parser) next(set string, expected string) (byte, error) {
	p.ws()
	c := p.peek()
	if c == 0 || strings.IndexByte(set, c) < 0 {
		return 0, p.syntax(expected)
	}
	p.i++
	return c, nil
}

// members walks the JSON object whose '{' is at the cursor (the caller checked it): for each
// member it reads the name and the ':' and calls field with the cursor on the value, which
// field must consume. It returns after the closing '}'.
func (p *parser) members(field func(name []byte) error) error {
	p.i++
	p.ws()
	if p.peek() == '}' {
		p.i++
		return nil
	}
	for {
		p.ws()
		name, err := p.str()
		if err != nil {
			return err
		}
		if _, err := p.next(":", "':'"); err != nil {
			return err
		}
		p.ws()
		if err := field(name); err != nil {
			return err
		}
		c, err := p.next(",}", "',' or '}'")
		if err != nil {
			return err
		}
		if c == '}' {
			return nil
		}
	}
}

func (p *parser) request() ([]broker.Message, error) {
	p.ws()
	if c := p.peek(); c != '{' {
		if c == 0 {
			return nil, p.syntax("a JSON object")
		}
		return nil, fieldError("body", `must be a JSON object such as {"messages": [{"value": ...}]}`)
	}
	var msgs []broker.Message
	seen := false
	err := p.members(func(name []byte) error {
		if string(name) != "messages" {
			return fieldError(string(name), `is not a known field; the body holds only "messages"`)
		}
		if seen {
			return fieldError("messages", "appears twice")
		}
		seen = true
		var err error
		msgs, err = p.messages()
		return err
	})
	if err != nil {
		return nil, err
	}
	p.ws()
	if p.i != len(p.b) {
		return nil, p.syntax("the end of the body")
	}
	if !seen {
		return nil, fieldError("messages", `is required: send {"messages": [{"value": ...}]}`)
	}
	if len(msgs) == 0 {
		return nil, fieldError("messages", "must hold at least one message")
	}
	return msgs, nil
}

func (p *parser) messages() ([]broker.Message, error) {
	if p.peek() != '[' {
		return nil, fieldError("messages", `must be an array of messages such as [{"value": ...}]`)
	}
	p.i++
	p.ws()
	if p.peek() == ']' {
		p.i++
		return nil, nil
	}
	msgs := make([]broker.Message, 0, 1)
	for idx := 0; ; idx++ {
		p.ws()
		m, err := p.message(idx)
		if err != nil {
			return nil, err
		}
		msgs = append(msgs, m)
		c, err := p.next(",]", "',' or ']'")
		if err != nil {
			return nil, err
		}
		if c == ']' {
			return msgs, nil
		}
	}
}

// message field bits, to reject repeats.
const (
	fKey = 1 << iota
	fValue
	fValueBase64
	fHeaders
	fPartition
	fTopic // transaction messages only
)

func msgField(idx int, name string) string { return fmt.Sprintf("messages[%d].%s", idx, name) }

func (p *parser) message(idx int) (broker.Message, error) {
	m, _, err := p.messageFields(idx, false)
	return m, err
}

// messageFields parses one message object. With withTopic (a transaction's message) it also
// takes, and requires, a "topic" naming the message's topic.
func (p *parser) messageFields(idx int, withTopic bool) (m broker.Message, topic string, err error) {
	m = broker.Message{Partition: -1}
	example, known := `{"key": "k", "value": ...}`, "key, value, value_base64, headers and partition"
	if withTopic {
		example, known = `{"topic": "t", "key": "k", "value": ...}`, "topic, key, value, value_base64, headers and partition"
	}
	if p.peek() != '{' {
		return m, "", fieldError(fmt.Sprintf("messages[%d]", idx), "must be an object such as %s", example)
	}
	seen := 0
	err = p.members(func(name []byte) error {
		var bit int
		var err error
		switch string(name) {
		case "topic":
			if !withTopic {
				return fieldError(msgField(idx, "topic"), "is not a known field; a message holds %s", known)
			}
			bit = fTopic
			if topic, err = p.topic(idx); err != nil {
				return err
			}
		case "key":
			bit = fKey
			switch p.peek() {
			case 'n':
				if err := p.literal("null"); err != nil {
					return err
				}
				m.Key = nil
			case '"':
				if m.Key, err = p.str(); err != nil {
					return err
				}
			default:
				return fieldError(msgField(idx, "key"), "must be a string or null")
			}
		case "value":
			bit = fValue
			if m.Value, err = p.value(); err != nil {
				return err
			}
			m.ValueJSON = true
		case "value_base64":
			bit = fValueBase64
			if m.Value, err = p.base64Value(idx); err != nil {
				return err
			}
		case "headers":
			bit = fHeaders
			if m.Headers, err = p.headers(idx); err != nil {
				return err
			}
		case "partition":
			bit = fPartition
			if m.Partition, err = p.partition(idx); err != nil {
				return err
			}
		default:
			return fieldError(msgField(idx, string(name)), "is not a known field; a message holds %s", known)
		}
		if seen&bit != 0 {
			return fieldError(msgField(idx, string(name)), "appears twice")
		}
		seen |= bit
		return nil
	})
	if err != nil {
		return m, "", err
	}
	switch {
	case withTopic && seen&fTopic == 0:
		return m, "", fieldError(msgField(idx, "topic"), "is required: a transaction's messages may go to any topic, so each names its own")
	case seen&fValue != 0 && seen&fValueBase64 != 0:
		return m, "", fieldError(msgField(idx, "value"), "and value_base64 exclude each other: send one of them")
	case seen&(fValue|fValueBase64) == 0:
		return m, "", fieldError(msgField(idx, "value"), "is required: send value (any JSON) or value_base64 (bytes as base64)")
	}
	return m, topic, nil
}

// topic parses a message's "topic": a string that is a valid topic name.
func (p *parser) topic(idx int) (string, error) {
	if p.peek() != '"' {
		return "", fieldError(msgField(idx, "topic"), "must be a string")
	}
	s, err := p.str()
	if err != nil {
		return "", err
	}
	topic := string(s)
	if !broker.ValidName(topic) {
		ae := invalidNameError("topic", topic)
		ae.field = msgField(idx, "topic")
		return "", ae
	}
	return topic, nil
}

// base64Value parses "value_base64": standard base64 with padding.
func (p *parser) base64Value(idx int) ([]byte, error) {
	if p.peek() != '"' {
		return nil, fieldError(msgField(idx, "value_base64"), "must be a base64 string")
	}
	s, err := p.str()
	if err != nil {
		return nil, err
	}
	dst := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(dst, s)
	if err != nil {
		return nil, fieldError(msgField(idx, "value_base64"), "must be standard base64 with padding (RFC 4648 section 4): %v", err)
	}
	return dst[:n], nil
}

func (p *parser) headers(idx int) ([]broker.Header, error) {
	switch p.peek() {
	case 'n':
		return nil, p.literal("null")
	case '{':
	default:
		return nil, fieldError(msgField(idx, "headers"), `must be an object of strings such as {"trace-id": "abc"}`)
	}
	var hs []broker.Header
	err := p.members(func(k []byte) error {
		if p.peek() != '"' {
			return fieldError(msgField(idx, "headers."+string(k)), "must be a string")
		}
		v, err := p.str()
		if err != nil {
			return err
		}
		hs = append(hs, broker.Header{Key: string(k), Value: string(v)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(hs) > 1 {
		slices.SortStableFunc(hs, func(a, b broker.Header) int { return strings.Compare(a.Key, b.Key) })
		for i := 1; i < len(hs); i++ {
			if hs[i].Key == hs[i-1].Key {
				return nil, fieldError(msgField(idx, "headers."+hs[i].Key), "appears twice")
			}
		}
	}
	return hs, nil
}

func (p *parser) partition(idx int) (int, error) {
	c := p.peek()
	if c == 'n' {
		return -1, p.literal("null")
	}
	if c != '-' && (c < '0' || c > '9') {
		return 0, fieldError(msgField(idx, "partition"), "must be a non-negative integer or null")
	}
	start := p.i
	if err := p.number(); err != nil {
		return 0, err
	}
	num := p.b[start:p.i]
	if num[0] == '-' || bytes.ContainsAny(num, ".eE") {
		return 0, fieldError(msgField(idx, "partition"), "must be a non-negative integer, not %s", num)
	}
	n := 0
	for _, d := range num {
		n = n*10 + int(d-'0')
		if n > math.MaxInt32 {
			return 0, fieldError(msgField(idx, "partition"), "is too large: %s", num)
		}
	}
	return n, nil
}

func (p *parser) literal(lit string) error {
	if len(p.b)-p.i < len(lit) || string(p.b[p.i:p.i+len(lit)]) != lit {
		return p.syntax("a JSON value")
	}
	p.i += len(lit)
	return nil
}

// str parses a JSON string at p.i. Without escapes the result aliases the body.
func (p *parser) str() ([]byte, error) {
	if p.peek() != '"' {
		return nil, p.syntax("a string")
	}
	p.i++
	start := p.i
	for p.i < len(p.b) {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, nil
		case c == '\\':
			return p.strEscaped(start)
		case c < 0x20:
			return nil, p.syntax("a string character (control characters must be escaped)")
		}
		p.i++
	}
	return nil, p.syntax("a closing '\"'")
}

// strEscaped finishes a string that holds escapes, decoding them into a new slice the way
// encoding/json does (a lone surrogate becomes U+FFFD).
func (p *parser) strEscaped(start int) ([]byte, error) {
	out := make([]byte, 0, p.i-start+16)
	out = append(out, p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return out, nil
		case c < 0x20:
			return nil, p.syntax("a string character (control characters must be escaped)")
		case c != '\\':
			out = append(out, c)
			p.i++
			continue
		}
		p.i++ // the backslash
		if p.i >= len(p.b) {
			return nil, p.syntax("an escape sequence")
		}
		e := p.b[p.i]
		p.i++
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, ok := hex4(p.b[p.i:])
			if !ok {
				return nil, p.syntax("four hex digits after \\u")
			}
			p.i += 4
			if utf16.IsSurrogate(r) {
				if len(p.b)-p.i >= 6 && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					if r2, ok := hex4(p.b[p.i+2:]); ok {
						if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
							out = utf8.AppendRune(out, d)
							p.i += 6
							continue
						}
					}
				}
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
		default:
			p.i--
			return nil, p.syntax(`an escape such as \n, \" or \u00e9`)
		}
	}
	return nil, p.syntax("a closing '\"'")
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// value validates the JSON value at p.i and returns its compact text (aliasing the body
// when it holds no insignificant whitespace).
func (p *parser) value() ([]byte, error) {
	start := p.i
	sawWS := false
	if err := p.skip(0, &sawWS); err != nil {
		return nil, err
	}
	v := p.b[start:p.i]
	if sawWS {
		v = jsontext.Compact(v)
	}
	return v, nil
}

func (p *parser) skipWS(saw *bool) {
	i := p.i
	p.ws()
	if p.i != i {
		*saw = true
	}
}

// skip validates one JSON value, recording whether it holds whitespace between tokens.
func (p *parser) skip(depth int, saw *bool) error {
	if depth > maxValueDepth {
		return newError(http.StatusBadRequest, api.CodeInvalidJSON, "a value is nested more than %d levels deep", maxValueDepth)
	}
	switch p.peek() {
	case '{':
		p.i++
		p.skipWS(saw)
		if p.peek() == '}' {
			p.i++
			return nil
		}
		for {
			p.skipWS(saw)
			if err := p.skipString(); err != nil {
				return err
			}
			p.skipWS(saw)
			if p.peek() != ':' {
				return p.syntax("':'")
			}
			p.i++
			p.skipWS(saw)
			if err := p.skip(depth+1, saw); err != nil {
				return err
			}
			p.skipWS(saw)
			switch p.peek() {
			case ',':
				p.i++
			case '}':
				p.i++
				return nil
			default:
				return p.syntax("',' or '}'")
			}
		}
	case '[':
		p.i++
		p.skipWS(saw)
		if p.peek() == ']' {
			p.i++
			return nil
		}
		for {
			p.skipWS(saw)
			if err := p.skip(depth+1, saw); err != nil {
				return err
			}
			p.skipWS(saw)
			switch p.peek() {
			case ',':
				p.i++
			case ']':
				p.i++
				return nil
			default:
				return p.syntax("',' or ']'")
			}
		}
	case '"':
		return p.skipString()
	case 't':
		return p.literal("true")
	case 'f':
		return p.literal("false")
	case 'n':
		return p.literal("null")
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return p.number()
	}
	return p.syntax("a JSON value")
}

func (p *parser) skipString() error {
	if p.peek() != '"' {
		return p.syntax("a string")
	}
	p.i++
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return nil
		case c < 0x20:
			return p.syntax("a string character (control characters must be escaped)")
		case c == '\\':
			p.i++
			switch p.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i++
			case 'u':
				if _, ok := hex4(p.b[p.i+1:]); !ok {
					return p.syntax("four hex digits after \\u")
				}
				p.i += 5
			default:
				return p.syntax(`an escape such as \n, \" or \u00e9`)
			}
		default:
			p.i++
		}
	}
	return p.syntax("a closing '\"'")
}

// number validates a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *parser) number() error {
	if p.peek() == '-' {
		p.i++
	}
	switch c := p.peek(); {
	case c == '0':
		p.i++
	case c >= '1' && c <= '9':
		p.digits()
	default:
		return p.syntax("a digit")
	}
	if p.peek() == '.' {
		p.i++
		if c := p.peek(); c < '0' || c > '9' {
			return p.syntax("a digit after '.'")
		}
		p.digits()
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		if c := p.peek(); c == '+' || c == '-' {
			p.i++
		}
		if c := p.peek(); c < '0' || c > '9' {
			return p.syntax("a digit in the exponent")
		}
		p.digits()
	}
	return nil
}

func (p *parser) digits() {
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
}
