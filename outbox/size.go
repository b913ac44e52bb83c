package outbox

import (
	"encoding/base64"
	"unicode/utf8"
)

// What a row costs in a produce request. Both stores size the rows they read with encodedSize,
// and the relay cuts batches at Options.BatchBytes of it (Relay.cut), so BatchBytes bounds the
// body of the requests a batch becomes, whatever the rows hold.

// requestFraming is the bytes of a produce request body besides its messages and the commas
// between them: {"messages":[]}.
const requestFraming = len(`{"messages":[]}`)

// messageFraming bounds the bytes of one message in a produce request besides the contents of
// its strings: {"key":"","value_base64":"","headers":{}} and the comma after it take 42.
const messageFraming = 64

// headerFraming is the bytes of one header besides its name and value: their quotes, the colon
// and the comma after it.
const headerFraming = 6

// encodedSize is an upper bound of the bytes m takes in the body of the produce request that
// ClientPublisher sends (an api.ProduceMessage in JSON: the payload in base64, 4 bytes for 3;
// the key and the headers' names and values as JSON strings, escaped as json.Marshal escapes
// them), less requestFraming. It exceeds the message's size in the broker's record (key,
// headers and value), so it bounds what BrokerPublisher appends too.
func encodedSize(m *Message) int {
	n := messageFraming + base64.StdEncoding.EncodedLen(len(m.Payload)) + jsonStringLen(m.Key)
	for k, v := range m.Headers {
		n += headerFraming + jsonStringLen(k) + jsonStringLen(v)
	}
	return n
}

// rawSize is what the broker counts of m against its per-message limit (broker.Options.
// MaxMessageBytes, 1 MiB by default): key, value, and each header's name and value with 6
// bytes of lengths.
func rawSize(m *Message) int {
	n := len(m.Key) + len(m.Payload)
	for k, v := range m.Headers {
		n += 6 + len(k) + len(v)
	}
	return n
}

// jsonStringLen is the length of s as encoding/json writes it between its quotes: printable
// ASCII as is, except " and \ (2 bytes) and <, > and & (\u003c, 6 bytes, json.Marshal's HTML
// escaping); \b, \f, \n, \r and \t in 2 bytes and other control characters in 6 (\u00XX); valid
// UTF-8 as is, except U+2028 and U+2029 (6 bytes each); and each byte of invalid UTF-8 as
// \ufffd (6 bytes). A string takes from len(s) to 6·len(s) bytes.
func jsonStringLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			case c < 0x20 || c == '<' || c == '>' || c == '&':
				n += 6
			default:
				n++
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1, r == '\u2028', r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
