package xa

import "unicode/utf8"

// plainJSONString returns the JSON string raw without decoding when it needs none: quoted,
// valid UTF-8, without escapes or control characters (json.Unmarshal would return the same).
func plainJSONString(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return "", false
	}
	in := raw[1 : len(raw)-1]
	for _, b := range in {
		if b == '"' || b == '\\' || b < 0x20 {
			return "", false
		}
	}
	if !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
}
