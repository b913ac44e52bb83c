package xa

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds the parser of an operation's SQL: it splits the configured text at its :name
// parameters (skipping quoted strings, quoted identifiers, comments, casts and dollar quotes)
// and joins the pieces again with the driver's placeholders (see operations.go).

func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isIdentPart(c byte) bool  { return isIdentStart(c) || c >= '0' && c <= '9' }

// compileSQL rewrites :name parameters into driver placeholders and returns the argument
// names in placeholder order (MySQL: one per occurrence; PostgreSQL: one per distinct name).
func compileSQL(src, driver string) (string, []string, error) {
	pieces, names, err := splitSQL(src, driver)
	if err != nil {
		return "", nil, err
	}
	q, args := joinSQL(pieces, names, driver, func(int) bool { return false })
	return q, args, nil
}

// joinSQL puts the driver's placeholders between the pieces of splitSQL and returns the
// argument names in placeholder order. MySQL has a ? per occurrence, CAST(? AS
// DECIMAL(65,30)) where cast(i) holds for occurrence i; PostgreSQL has $k per distinct name.
func joinSQL(pieces, names []string, driver string, cast func(i int) bool) (string, []string) {
	var b strings.Builder
	var args []string
	pgIndex := map[string]int{}
	b.WriteString(pieces[0])
	for i, name := range names {
		if driver == "postgres" {
			k, ok := pgIndex[name]
			if !ok {
				args = append(args, name)
				k = len(args)
				pgIndex[name] = k
			}
			b.WriteString("$" + strconv.Itoa(k))
		} else {
			args = append(args, name)
			if cast(i) {
				b.WriteString(mysqlDecimalParam)
			} else {
				b.WriteByte('?')
			}
		}
		b.WriteString(pieces[i+1])
	}
	return b.String(), args
}

// splitSQL splits src at its :name parameters: the text around them (one piece more than
// there are parameters) and the name of each occurrence, in order.
func splitSQL(src, driver string) ([]string, []string, error) {
	if strings.TrimSpace(src) == "" {
		return nil, nil, fmt.Errorf("empty statement")
	}
	if !utf8.ValidString(src) {
		return nil, nil, fmt.Errorf("not valid UTF-8")
	}
	var b strings.Builder
	var pieces, names []string
	n := len(src)
	for i := 0; i < n; {
		c := src[i]
		switch {
		case c == '\'' || c == '"' || c == '`' && driver == "mysql":
			j, err := skipQuoted(src, i, c, driver == "mysql" && c != '`')
			if err != nil {
				return nil, nil, err
			}
			b.WriteString(src[i:j])
			i = j
		case c == '-' && i+1 < n && src[i+1] == '-', c == '#' && driver == "mysql":
			j := strings.IndexByte(src[i:], '\n')
			if j < 0 {
				j = n - i
			}
			b.WriteString(src[i : i+j])
			i += j
		case c == '/' && i+1 < n && src[i+1] == '*':
			j := strings.Index(src[i+2:], "*/")
			if j < 0 {
				return nil, nil, fmt.Errorf("unterminated /* comment")
			}
			b.WriteString(src[i : i+2+j+2])
			i += 2 + j + 2
		case c == '$' && driver == "postgres":
			// $1 placeholders are refused; $tag$ ... $tag$ strings are copied whole.
			j := i + 1
			for j < n && isIdentPart(src[j]) {
				j++
			}
			if j < n && src[j] == '$' && (j == i+1 || isIdentStart(src[i+1])) {
				tag := src[i : j+1]
				end := strings.Index(src[j+1:], tag)
				if end < 0 {
					return nil, nil, fmt.Errorf("unterminated dollar-quoted string %s", tag)
				}
				stop := j + 1 + end + len(tag)
				b.WriteString(src[i:stop])
				i = stop
				continue
			}
			if i+1 < n && src[i+1] >= '0' && src[i+1] <= '9' {
				return nil, nil, fmt.Errorf("positional parameter at byte %d: use :name parameters", i)
			}
			b.WriteByte(c)
			i++
		case c == '?':
			return nil, nil, fmt.Errorf("'?' at byte %d: use :name parameters", i)
		case c == ':' && i+1 < n && src[i+1] == ':':
			b.WriteString("::")
			i += 2
		case c == ':' && i+1 < n && isIdentStart(src[i+1]) && (i == 0 || !isIdentPart(src[i-1])):
			j := i + 1
			for j < n && isIdentPart(src[j]) {
				j++
			}
			names = append(names, src[i+1:j])
			pieces = append(pieces, b.String())
			b.Reset()
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	return append(pieces, b.String()), names, nil
}

// skipQuoted returns the index after the quoted text starting at src[i] (quote q, doubled to
// escape; backslash escapes too when backslash is set, as MySQL's default mode has them).
func skipQuoted(src string, i int, q byte, backslash bool) (int, error) {
	for j := i + 1; j < len(src); j++ {
		switch src[j] {
		case '\\':
			if backslash {
				j++
			}
		case q:
			if j+1 < len(src) && src[j+1] == q {
				j++
				continue
			}
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated %c quote at byte %d", q, i)
}
