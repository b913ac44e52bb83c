package gateway

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds the named operations of the global transactions API: the only SQL the
// HTTP API can run. Each is configured as
//
//	operations:
//	  wallet.debit:
//	    sql: "UPDATE wallets SET balance = balance - :amount WHERE id = :account AND balance >= :amount"
//	    expect_rows: 1
//	    params: {account: "string max_length=64", amount: "integer min=1"}
//
// The key is "<resource>.<operation>": a step {"resource": "wallet", "operation": "debit"}
// runs operations["wallet.debit"] on the resource "wallet". The operation part is what
// follows the last '.', so a resource name may hold dots and an operation name may not.
//
// :name parameters are rewritten into the resource driver's placeholders (? for MySQL and
// MariaDB, $1, $2 ... for PostgreSQL, the same number for a repeated name) and their values
// are bound, never spliced into the text. The parser skips quoted strings, quoted
// identifiers, comments, PostgreSQL's :: casts and dollar-quoted strings; a bare ? or $1 in
// the configured SQL is refused, so every value goes through a checked parameter.
//
// params declares each parameter's type (string, integer, number, boolean, or any) with
// optional constraints (min=, max= for integer; max_length= for string). A parameter not
// declared is "any": a JSON string, number or boolean. Values are checked before anything
// runs: a missing, unknown or ill-typed parameter is 400 invalid_parameter naming it.

// OperationConfig is one configured operation (config: operations.<resource>.<operation>).
type OperationConfig struct {
	SQL string
	// ExpectRows, when positive, fails the step unless exactly this many rows were affected.
	ExpectRows int
	// Params maps a parameter name to its type spec ("integer min=1", "string max_length=64").
	Params map[string]string
}

// paramKind is a parameter's declared type.
type paramKind int

const (
	kindAny paramKind = iota
	kindString
	kindInteger
	kindNumber
	kindBoolean
)

var kindNames = map[string]paramKind{"any": kindAny, "string": kindString, "integer": kindInteger, "number": kindNumber, "boolean": kindBoolean}

func (k paramKind) String() string {
	for n, v := range kindNames {
		if v == k {
			return n
		}
	}
	return "unknown"
}

// paramSpec is a parameter's type and constraints.
type paramSpec struct {
	kind      paramKind
	min, max  *int64
	maxLength int
}

// operation is a compiled operation.
type operation struct {
	name       string // "wallet.debit"
	resource   string
	sql        string // with the driver's placeholders
	args       []string
	expectRows int64
	params     map[string]paramSpec
	names      []string // parameter names, sorted, for messages
}

// parseParamSpec parses "integer min=1 max=100", "string max_length=64", "number", ...
func parseParamSpec(s string) (paramSpec, error) {
	var p paramSpec
	f := strings.Fields(s)
	if len(f) == 0 {
		return p, fmt.Errorf("empty type; want string, integer, number, boolean or any")
	}
	k, ok := kindNames[f[0]]
	if !ok {
		return p, fmt.Errorf("type %q: want string, integer, number, boolean or any", f[0])
	}
	p.kind = k
	for _, c := range f[1:] {
		key, val, ok := strings.Cut(c, "=")
		if !ok {
			return p, fmt.Errorf("constraint %q: want name=value", c)
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return p, fmt.Errorf("constraint %q: %s is not an integer", c, val)
		}
		switch {
		case key == "min" && k == kindInteger:
			p.min = &n
		case key == "max" && k == kindInteger:
			p.max = &n
		case key == "max_length" && k == kindString && n > 0:
			p.maxLength = int(n)
		default:
			return p, fmt.Errorf("constraint %q does not apply to %s (integer takes min= and max=, string takes max_length=)", c, k)
		}
	}
	return p, nil
}

// compileOperations checks and compiles the configured operations. driverOf returns a
// resource's driver ("mysql" or "postgres") or an error when the resource is not configured.
func compileOperations(cfg map[string]OperationConfig, driverOf func(string) (string, error)) (map[string]*operation, error) {
	out := make(map[string]*operation, len(cfg))
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		oc := cfg[key]
		i := strings.LastIndexByte(key, '.')
		if i <= 0 || i == len(key)-1 {
			return nil, fmt.Errorf("operations.%s: the key must be <resource>.<operation> (for example wallet.debit)", key)
		}
		res := key[:i]
		driver, err := driverOf(res)
		if err != nil {
			return nil, fmt.Errorf("operations.%s: resource %q is not in resources", key, res)
		}
		if driver != "mysql" && driver != "postgres" {
			return nil, fmt.Errorf("operations.%s: resource %q is a %s resource, not a database", key, res, driver)
		}
		if oc.ExpectRows < 0 {
			return nil, fmt.Errorf("operations.%s.expect_rows %d: must not be negative", key, oc.ExpectRows)
		}
		q, args, err := compileSQL(oc.SQL, driver)
		if err != nil {
			return nil, fmt.Errorf("operations.%s.sql: %w", key, err)
		}
		op := &operation{name: key, resource: res, sql: q, args: args, expectRows: int64(oc.ExpectRows), params: map[string]paramSpec{}}
		for _, a := range args {
			if _, ok := op.params[a]; !ok {
				op.params[a] = paramSpec{kind: kindAny}
				op.names = append(op.names, a)
			}
		}
		for name, spec := range oc.Params {
			if _, ok := op.params[name]; !ok {
				return nil, fmt.Errorf("operations.%s.params.%s: the SQL has no :%s", key, name, name)
			}
			p, err := parseParamSpec(spec)
			if err != nil {
				return nil, fmt.Errorf("operations.%s.params.%s: %w", key, name, err)
			}
			op.params[name] = p
		}
		sort.Strings(op.names)
		out[key] = op
	}
	return out, nil
}

func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isIdentPart(c byte) bool  { return isIdentStart(c) || c >= '0' && c <= '9' }

// compileSQL rewrites :name parameters into driver placeholders and returns the argument
// names in placeholder order (MySQL: one per occurrence; PostgreSQL: one per distinct name).
func compileSQL(src, driver string) (string, []string, error) {
	if strings.TrimSpace(src) == "" {
		return "", nil, fmt.Errorf("empty statement")
	}
	if !utf8.ValidString(src) {
		return "", nil, fmt.Errorf("not valid UTF-8")
	}
	var b strings.Builder
	var args []string
	pgIndex := map[string]int{}
	n := len(src)
	for i := 0; i < n; {
		c := src[i]
		switch {
		case c == '\'' || c == '"' || c == '`' && driver == "mysql":
			j, err := skipQuoted(src, i, c, driver == "mysql" && c != '`')
			if err != nil {
				return "", nil, err
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
				return "", nil, fmt.Errorf("unterminated /* comment")
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
					return "", nil, fmt.Errorf("unterminated dollar-quoted string %s", tag)
				}
				stop := j + 1 + end + len(tag)
				b.WriteString(src[i:stop])
				i = stop
				continue
			}
			if i+1 < n && src[i+1] >= '0' && src[i+1] <= '9' {
				return "", nil, fmt.Errorf("positional parameter at byte %d: use :name parameters", i)
			}
			b.WriteByte(c)
			i++
		case c == '?':
			return "", nil, fmt.Errorf("'?' at byte %d: use :name parameters", i)
		case c == ':' && i+1 < n && src[i+1] == ':':
			b.WriteString("::")
			i += 2
		case c == ':' && i+1 < n && isIdentStart(src[i+1]) && (i == 0 || !isIdentPart(src[i-1])):
			j := i + 1
			for j < n && isIdentPart(src[j]) {
				j++
			}
			name := src[i+1 : j]
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
				b.WriteByte('?')
			}
			i = j
		default:
			b.WriteByte(c)
			i++
		}
	}
	return b.String(), args, nil
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

// bind checks a step's parameters against the operation and returns the values in
// placeholder order. field is the step's path in the request ("steps[0]").
func (op *operation) bind(field string, params map[string]json.RawMessage) ([]any, error) {
	vals := make(map[string]any, len(params))
	for name, raw := range params {
		spec, ok := op.params[name]
		if !ok {
			return nil, paramError(field+".params."+name, "is not a parameter of %s (its parameters: %s)", op.name, strings.Join(op.names, ", "))
		}
		v, err := spec.value(raw)
		if err != nil {
			return nil, paramError(field+".params."+name, "%v", err)
		}
		vals[name] = v
	}
	for _, name := range op.names {
		if _, ok := vals[name]; !ok {
			return nil, paramError(field+".params."+name, "is missing: %s needs %s", op.name, strings.Join(op.names, ", "))
		}
	}
	args := make([]any, len(op.args))
	for i, a := range op.args {
		args[i] = vals[a]
	}
	return args, nil
}

// value converts a JSON value under the spec: integer → int64, number → its decimal text
// (exact, for DECIMAL columns), string → string, boolean → bool; any takes a string, number
// (int64 when integral, else its text) or boolean.
func (p paramSpec) value(raw json.RawMessage) (any, error) {
	raw = trimJSON(raw)
	if len(raw) == 0 {
		return nil, fmt.Errorf("has no value")
	}
	c := raw[0]
	isNum := c == '-' || c >= '0' && c <= '9'
	kind := p.kind
	if kind == kindAny {
		switch {
		case c == '"':
			kind = kindString
		case c == 't' || c == 'f':
			kind = kindBoolean
		case isNum && !strings.ContainsAny(string(raw), ".eE"):
			kind = kindInteger
		case isNum:
			kind = kindNumber
		default:
			return nil, fmt.Errorf("must be a string, a number or a boolean, not %s", jsonValueKind(c))
		}
	}
	switch kind {
	case kindString:
		if c != '"' {
			return nil, fmt.Errorf("must be a string, not %s", jsonValueKind(c))
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("is not a valid JSON string")
		}
		if p.maxLength > 0 && utf8.RuneCountInString(s) > p.maxLength {
			return nil, fmt.Errorf("must be at most %d characters long", p.maxLength)
		}
		return s, nil
	case kindBoolean:
		switch string(raw) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, fmt.Errorf("must be true or false, not %s", jsonValueKind(c))
	case kindInteger:
		if !isNum {
			return nil, fmt.Errorf("must be an integer, not %s", jsonValueKind(c))
		}
		n, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			if f, ferr := strconv.ParseFloat(string(raw), 64); ferr == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53 {
				n = int64(f) // 100.0 or 1e2: integral
			} else {
				return nil, fmt.Errorf("must be an integer from %d to %d, not %s", int64(math.MinInt64), int64(math.MaxInt64), raw)
			}
		}
		if p.min != nil && n < *p.min {
			return nil, fmt.Errorf("must be at least %d, not %d", *p.min, n)
		}
		if p.max != nil && n > *p.max {
			return nil, fmt.Errorf("must be at most %d, not %d", *p.max, n)
		}
		return n, nil
	case kindNumber:
		if !isNum {
			return nil, fmt.Errorf("must be a number, not %s", jsonValueKind(c))
		}
		if _, err := strconv.ParseFloat(string(raw), 64); err != nil && !strings.Contains(err.Error(), "range") {
			return nil, fmt.Errorf("is not a valid number")
		}
		return string(raw), nil
	}
	return nil, fmt.Errorf("has an unsupported type")
}

func trimJSON(b []byte) []byte {
	return []byte(strings.TrimSpace(string(b)))
}

func jsonValueKind(c byte) string {
	switch {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	}
	return "a number"
}

// unknownOperation is the 400 for a step naming an operation that is not configured.
func unknownOperation(field, resource, name string, ops map[string]*operation) *apiError {
	var known []string
	for k, op := range ops {
		if op.resource == resource {
			known = append(known, strings.TrimPrefix(k, resource+"."))
		}
	}
	sort.Strings(known)
	list := "none"
	if len(known) > 0 {
		list = strings.Join(known, ", ")
	}
	return &apiError{status: http.StatusBadRequest, code: "unknown_operation", field: field + ".operation",
		message: fmt.Sprintf("operation %q is not configured for resource %q (its operations: %s); configure it as operations.%s.%s", name, resource, list, resource, name)}
}
