package xa

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file holds the named operations of global transactions: the only SQL the HTTP API
// can run. Each is configured as
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
// Every operation is compiled once, when the configuration is loaded (CompileOperations):
// a bad one stops start-up with its name, and nothing is parsed per request.
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
// runs (Operation.Bind): a missing, unknown or ill-typed parameter is a *ParamError naming
// it, which the HTTP door answers with 400 invalid_parameter.
//
// Numbers are read exactly, never through a float64. An integer must be a whole number
// within int64 (100, 1e2 and 1.5e1 are; 1.5 and 0.99999999999999999 are refused, not
// rounded). A number (or an any given a fraction, an exponent or an integer past int64) is a
// decimal of at most 35 digits before the point and 30 after it, bound as its plain decimal
// text. MySQL/MariaDB compute with a text parameter as a DOUBLE, which loses cents on large
// balances, so there its placeholder is CAST(? AS DECIMAL(65,30)): the limits are what that
// type holds, and past them the cast would clip or round without an error. PostgreSQL infers
// numeric from the column and is exact; the same limits apply there, so an operation takes
// the same values on either database.

// OperationConfig is one configured operation (config: operations.<resource>.<operation>).
type OperationConfig struct {
	SQL string
	// ExpectRows, when positive, fails the step unless exactly this many rows were affected.
	ExpectRows int
	// Params maps a parameter name to its type spec ("integer min=1", "string max_length=64").
	Params map[string]string
}

// ParamError is a step parameter that is missing, unknown or of the wrong type or value.
type ParamError struct {
	Param  string // the parameter's name
	Reason string // what is wrong, as a predicate: "is missing: ...", "must be an integer, ..."
}

func (e *ParamError) Error() string { return e.Param + " " + e.Reason }

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

// Decimal parameters: the digits a value may have before and after the point, and the
// MySQL/MariaDB placeholder of one (see above). The cast is SQL text of the configuration's
// making; the value is still bound.
const (
	decimalIntDigits  = 35
	decimalFracDigits = 30
	mysqlDecimalParam = "CAST(? AS DECIMAL(65,30))"
)

// Operation is a compiled operation.
type Operation struct {
	name       string // "wallet.debit"
	resource   string
	driver     string
	sql        string // with the driver's placeholders (MySQL: a number parameter's cast)
	args       []string
	expectRows int64
	params     map[string]paramSpec
	names      []string // parameter names, sorted, for messages
	// pieces is, for MySQL, the configured SQL around its parameters (one more than args), to
	// cast at Run the placeholder of an any parameter given a decimal.
	pieces []string
}

// Name is the operation's key, "<resource>.<operation>".
func (op *Operation) Name() string { return op.name }

// Resource is the resource the operation runs on.
func (op *Operation) Resource() string { return op.resource }

// SQL is the statement with the driver's placeholders, and Args the parameter name of each
// placeholder, in order. On MySQL a number parameter's placeholder is CAST(? AS
// DECIMAL(65,30)); an any parameter's is cast too when a step gives it a decimal (Run).
func (op *Operation) SQL() (string, []string) { return op.sql, op.args }

// Operations are the compiled operations of a configuration. The zero value, and nil, hold
// none.
type Operations struct {
	byName map[string]*Operation
}

// Len is the number of operations.
func (o *Operations) Len() int {
	if o == nil {
		return 0
	}
	return len(o.byName)
}

// Lookup returns the operation of a resource by its name (the part after the last '.').
func (o *Operations) Lookup(resource, operation string) (*Operation, bool) {
	if o == nil || strings.Contains(operation, ".") {
		return nil, false
	}
	op, ok := o.byName[resource+"."+operation]
	return op, ok
}

// Names returns the operation names configured for a resource, sorted.
func (o *Operations) Names(resource string) []string {
	var out []string
	if o == nil {
		return out
	}
	for _, op := range o.byName {
		if op.resource == resource {
			out = append(out, strings.TrimPrefix(op.name, resource+"."))
		}
	}
	sort.Strings(out)
	return out
}

// Check verifies that every operation's resource is known to driverOf (a coordinator's
// Driver) with the driver it was compiled for.
func (o *Operations) Check(driverOf func(resource string) (string, error)) error {
	if o == nil {
		return nil
	}
	var errs []error
	for _, key := range o.keys() {
		op := o.byName[key]
		d, err := driverOf(op.resource)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("operations.%s: resource %q is not a resource of the coordinator", key, op.resource))
		case d != op.driver:
			errs = append(errs, fmt.Errorf("operations.%s: resource %q is a %s resource, compiled for %s", key, op.resource, d, op.driver))
		}
	}
	return errors.Join(errs...)
}

func (o *Operations) keys() []string {
	keys := make([]string, 0, len(o.byName))
	for k := range o.byName {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// CompileOperations checks and compiles the configured operations. driverOf returns a
// resource's driver ("mysql" or "postgres") or an error when the resource is not
// configured. Every problem is reported, each naming its operation
// ("operations.wallet.debit.sql: ..."), sorted by name.
func CompileOperations(cfg map[string]OperationConfig, driverOf func(resource string) (string, error)) (*Operations, error) {
	out := &Operations{byName: make(map[string]*Operation, len(cfg))}
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, key := range keys {
		op, err := compileOperation(key, cfg[key], driverOf)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out.byName[key] = op
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

func compileOperation(key string, oc OperationConfig, driverOf func(string) (string, error)) (*Operation, error) {
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
	pieces, occurrences, err := splitSQL(oc.SQL, driver)
	if err != nil {
		return nil, fmt.Errorf("operations.%s.sql: %w", key, err)
	}
	op := &Operation{name: key, resource: res, driver: driver, expectRows: int64(oc.ExpectRows),
		params: map[string]paramSpec{}}
	for _, a := range occurrences {
		if _, ok := op.params[a]; !ok {
			op.params[a] = paramSpec{kind: kindAny}
			op.names = append(op.names, a)
		}
	}
	pnames := make([]string, 0, len(oc.Params))
	for name := range oc.Params {
		pnames = append(pnames, name)
	}
	sort.Strings(pnames)
	for _, name := range pnames {
		if _, ok := op.params[name]; !ok {
			return nil, fmt.Errorf("operations.%s.params.%s: the SQL has no :%s", key, name, name)
		}
		p, err := parseParamSpec(oc.Params[name])
		if err != nil {
			return nil, fmt.Errorf("operations.%s.params.%s: %w", key, name, err)
		}
		op.params[name] = p
	}
	sort.Strings(op.names)
	op.sql, op.args = joinSQL(pieces, occurrences, driver, func(i int) bool { return op.params[occurrences[i]].kind == kindNumber })
	if driver == "mysql" {
		op.pieces = pieces
	}
	return op, nil
}

// Bind checks a step's parameters against the operation and returns the values in
// placeholder order. A problem is a *ParamError.
func (op *Operation) Bind(params map[string]json.RawMessage) ([]any, error) {
	vals := make(map[string]any, len(params))
	// Unknown names first, in name order, so the answer does not depend on map order.
	given := make([]string, 0, len(params))
	for name := range params {
		given = append(given, name)
	}
	sort.Strings(given)
	for _, name := range given {
		spec, ok := op.params[name]
		if !ok {
			return nil, &ParamError{Param: name, Reason: fmt.Sprintf("is not a parameter of %s (its parameters: %s)", op.name, strings.Join(op.names, ", "))}
		}
		v, err := spec.value(params[name])
		if err != nil {
			return nil, &ParamError{Param: name, Reason: err.Error()}
		}
		if d, ok := v.(decimalText); ok && (spec.kind != kindAny || op.driver != "mysql") {
			v = string(d) // its placeholder is cast already (MySQL number), or needs no cast
		}
		vals[name] = v
	}
	for _, name := range op.names {
		if _, ok := vals[name]; !ok {
			return nil, &ParamError{Param: name, Reason: fmt.Sprintf("is missing: %s needs %s", op.name, strings.Join(op.names, ", "))}
		}
	}
	args := make([]any, len(op.args))
	for i, a := range op.args {
		args[i] = vals[a]
	}
	return args, nil
}

// Run runs the operation as step i of tx with the values Bind returned, and checks its row
// count. A failure is a *Reason (code step_failed, timed_out or resource_unavailable) that
// rolls the transaction back, or an error of Enlist.
func (op *Operation) Run(ctx context.Context, tx *GlobalTx, i int, args []any) (int64, error) {
	return op.run(ctx, tx, i, args, false)
}

// RunPrepare is Run for the last step on its resource of a transaction that will commit in two
// phases: the branch is prepared with the statement (Branch.ExecPrepare), in the same round
// trip where the driver allows it.
func (op *Operation) RunPrepare(ctx context.Context, tx *GlobalTx, i int, args []any) (int64, error) {
	return op.run(ctx, tx, i, args, true)
}

func (op *Operation) run(ctx context.Context, tx *GlobalTx, i int, args []any, prepare bool) (int64, error) {
	br, err := tx.Enlist(ctx, op.resource)
	if err != nil {
		return 0, err
	}
	exec := br.Exec
	if prepare {
		exec = br.ExecPrepare
	}
	q, args := op.statement(args)
	n, err := exec(ctx, q, args...)
	if err != nil {
		code := "step_failed"
		switch {
		case errors.Is(err, ErrTimedOut):
			code = "timed_out"
		case XACode(err) == XAERRMFail:
			code = "resource_unavailable"
		}
		return 0, &Reason{Code: code, Message: fmt.Sprintf("step %d %s failed: %v", i, op.name, err)}
	}
	if op.expectRows > 0 && n != op.expectRows {
		return 0, &Reason{Code: "step_failed", Message: fmt.Sprintf("step %d %s affected %d rows, expected %d", i, op.name, n, op.expectRows)}
	}
	return n, nil
}

// statement returns the SQL and arguments to run for args from Bind: an any parameter given a
// decimal (decimalText) is bound as its text, and on MySQL its placeholder is cast like a
// number parameter's. The text is built from the configured pieces only.
func (op *Operation) statement(args []any) (string, []any) {
	if !slices.ContainsFunc(args, func(a any) bool { _, ok := a.(decimalText); return ok }) {
		return op.sql, args
	}
	out := make([]any, len(args))
	for i, a := range args {
		if d, ok := a.(decimalText); ok {
			a = string(d)
		}
		out[i] = a
	}
	if op.pieces == nil || len(op.pieces) != len(args)+1 {
		return op.sql, out
	}
	q, _ := joinSQL(op.pieces, op.args, op.driver, func(i int) bool {
		_, dec := args[i].(decimalText)
		return dec || op.params[op.args[i]].kind == kindNumber
	})
	return q, out
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

// decimalText is the value of a decimal parameter: its plain decimal text (no exponent),
// within decimalIntDigits and decimalFracDigits. Bind returns it for an any parameter of a
// MySQL operation, so that Run casts that placeholder; everywhere else it is bound as a string.
type decimalText string

// value converts a JSON value under the spec: integer → int64, number → decimalText,
// string → string, boolean → bool; any takes a string, a number (int64 when written as an
// integer within int64, else decimalText) or a boolean. Numbers are read exactly.
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
		case isNum:
			d, ok := parseJSONNumber(string(raw))
			if !ok {
				return nil, fmt.Errorf("is not a valid number")
			}
			if n, ok := d.int64(); ok && !strings.ContainsAny(string(raw), ".eE") {
				return n, nil
			}
			return d.decimal(raw)
		default:
			return nil, fmt.Errorf("must be a string, a number or a boolean, not %s", jsonValueKind(c))
		}
	}
	switch kind {
	case kindString:
		if c != '"' {
			return nil, fmt.Errorf("must be a string, not %s", jsonValueKind(c))
		}
		s, ok := plainJSONString(raw)
		if !ok {
			var dec string
			if err := json.Unmarshal(raw, &dec); err != nil {
				return nil, fmt.Errorf("is not a valid JSON string")
			}
			s = dec
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
		d, ok := parseJSONNumber(string(raw))
		if !ok {
			return nil, fmt.Errorf("is not a valid number")
		}
		n, ok := d.int64()
		if !ok {
			return nil, fmt.Errorf("must be an integer from %d to %d, not %s", int64(math.MinInt64), int64(math.MaxInt64), shortNumber(raw))
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
		d, ok := parseJSONNumber(string(raw))
		if !ok {
			return nil, fmt.Errorf("is not a valid number")
		}
		return d.decimal(raw)
	}
	return nil, fmt.Errorf("has an unsupported type")
}

// jsonDecimal is a JSON number read exactly: ±0.digits × 10^point.
type jsonDecimal struct {
	neg    bool
	digits string // the significant digits, without leading or trailing zeros; "" for zero
	point  int64  // digits before the decimal point: may be negative or past len(digits)
	scale  int64  // digits after the point as written, the exponent applied (1.50 and 150e-2: 2)
}

// maxExponent caps the exponent read: 1e999999999 is refused as quickly as 1e99, with no
// digit written out.
const maxExponent = 1 << 40

// parseJSONNumber reads s, a JSON number (RFC 8259 grammar), exactly.
func parseJSONNumber(s string) (jsonDecimal, bool) {
	var d jsonDecimal
	digitsFrom := func(i int) int {
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i
	}
	i := 0
	if i < len(s) && s[i] == '-' {
		d.neg = true
		i++
	}
	j := digitsFrom(i)
	intPart := s[i:j]
	if intPart == "" || len(intPart) > 1 && intPart[0] == '0' {
		return d, false
	}
	i = j
	var frac string
	if i < len(s) && s[i] == '.' {
		j = digitsFrom(i + 1)
		frac = s[i+1 : j]
		if frac == "" {
			return d, false
		}
		i = j
	}
	var exp int64
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		negExp := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			negExp = s[i] == '-'
			i++
		}
		j = digitsFrom(i)
		if j == i {
			return d, false
		}
		for _, c := range s[i:j] {
			if exp < maxExponent {
				exp = exp*10 + int64(c-'0')
			}
		}
		if negExp {
			exp = -exp
		}
		i = j
	}
	if i != len(s) {
		return d, false
	}
	all := intPart + frac
	d.point = int64(len(intPart)) + exp
	d.scale = max(int64(len(frac))-exp, 0)
	trimmed := strings.TrimLeft(all, "0")
	d.point -= int64(len(all) - len(trimmed))
	d.digits = strings.TrimRight(trimmed, "0")
	if d.digits == "" {
		d.neg, d.point = false, 0
	}
	return d, true
}

// intDigits and fracDigits are the significant digits before and after the decimal point.
func (d jsonDecimal) intDigits() int64 { return max(d.point, 0) }
func (d jsonDecimal) fracDigits() int64 {
	return max(int64(len(d.digits))-d.point, 0)
}

// int64 returns d when it is a whole number within int64.
func (d jsonDecimal) int64() (int64, bool) {
	if d.digits == "" {
		return 0, true
	}
	if d.fracDigits() > 0 || d.point > 19 {
		return 0, false
	}
	text := d.digits + strings.Repeat("0", int(d.point)-len(d.digits))
	if d.neg {
		text = "-" + text
	}
	n, err := strconv.ParseInt(text, 10, 64)
	return n, err == nil
}

// decimal returns d's plain decimal text, its trailing zeros as written (up to
// decimalFracDigits), or the error naming the limits when d is past them.
func (d jsonDecimal) decimal(raw []byte) (any, error) {
	if d.intDigits() > decimalIntDigits || d.fracDigits() > decimalFracDigits {
		return nil, fmt.Errorf("must be a decimal of at most %d digits before the point and %d after it, not %s",
			decimalIntDigits, decimalFracDigits, shortNumber(raw))
	}
	n := int64(len(d.digits))
	scale := max(min(d.scale, decimalFracDigits), d.fracDigits())
	var b strings.Builder
	if d.neg {
		b.WriteByte('-')
	}
	switch {
	case d.point <= 0:
		b.WriteByte('0')
	case d.point >= n:
		b.WriteString(d.digits)
		b.WriteString(strings.Repeat("0", int(d.point-n)))
	default:
		b.WriteString(d.digits[:d.point])
	}
	if scale > 0 {
		b.WriteByte('.')
		written := int64(0)
		switch {
		case d.point < 0:
			b.WriteString(strings.Repeat("0", int(-d.point)))
			b.WriteString(d.digits)
			written = -d.point + n
		case d.point < n:
			b.WriteString(d.digits[d.point:])
			written = n - d.point
		}
		b.WriteString(strings.Repeat("0", int(scale-written)))
	}
	return decimalText(b.String()), nil
}

// shortNumber is raw for a message, cut to 40 bytes.
func shortNumber(raw []byte) string {
	if len(raw) > 40 {
		return string(raw[:40]) + "..."
	}
	return string(raw)
}

func trimJSON(b []byte) []byte {
	return bytes.TrimSpace(b) // no copy: every value read from it is copied
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
