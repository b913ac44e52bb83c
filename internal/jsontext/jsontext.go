// Package jsontext holds the JSON text helpers both doors share, so that a JSON message value
// is stored the same way whichever door it came through (HTTP produce, the text protocol's
// put with the JSON flag): compact, as docs/http-api.md promises.
package jsontext

// Compact returns valid JSON text v without the whitespace between its tokens. When v holds
// none it is returned as is (no copy); otherwise the result is a new slice. v must be valid
// JSON (json.Valid): Compact does not check it.
func Compact(v []byte) []byte {
	first := -1
	inStr := false
scan:
	for i := 0; i < len(v); i++ {
		c := v[i]
		if inStr {
			switch c {
			case '\\':
				i++
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			first = i
			break scan
		case '"':
			inStr = true
		}
	}
	if first < 0 {
		return v
	}
	out := make([]byte, first, len(v)-1)
	copy(out, v[:first])
	for i := first; i < len(v); i++ {
		c := v[i]
		if inStr {
			out = append(out, c)
			switch c {
			case '\\':
				i++
				out = append(out, v[i])
			case '"':
				inStr = false
			}
			continue
		}
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '"':
			inStr = true
		}
		out = append(out, c)
	}
	return out
}
