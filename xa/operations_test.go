package xa

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCompileSQL(t *testing.T) {
	for _, c := range []struct {
		driver, src, want string
		args              []string
		err               bool
	}{
		{"mysql", "UPDATE w SET b = b - :amount WHERE id = :account AND b >= :amount",
			"UPDATE w SET b = b - ? WHERE id = ? AND b >= ?", []string{"amount", "account", "amount"}, false},
		{"postgres", "UPDATE w SET b = b - :amount WHERE id = :account AND b >= :amount",
			"UPDATE w SET b = b - $1 WHERE id = $2 AND b >= $1", []string{"amount", "account"}, false},
		{"postgres", "SELECT :x::bigint, ':not' || \":nor\" -- :comment\n/* :c */ FROM t", "SELECT $1::bigint, ':not' || \":nor\" -- :comment\n/* :c */ FROM t", []string{"x"}, false},
		{"postgres", "SELECT $$ :no $$, $tag$ :x $tag$, :y", "SELECT $$ :no $$, $tag$ :x $tag$, $1", []string{"y"}, false},
		{"mysql", "SELECT 'it''s :no', 'a\\' :no', `:col` # :c\n, :y", "SELECT 'it''s :no', 'a\\' :no', `:col` # :c\n, ?", []string{"y"}, false},
		{"mysql", "SELECT a:b", "SELECT a:b", nil, false},
		{"mysql", "SELECT ?", "", nil, true},
		{"postgres", "SELECT $1", "", nil, true},
		{"postgres", "SELECT 'open", "", nil, true},
		{"mysql", "SELECT /* open", "", nil, true},
		{"mysql", "  ", "", nil, true},
	} {
		got, args, err := compileSQL(c.src, c.driver)
		if (err != nil) != c.err {
			t.Errorf("%s %q: error %v, want error %v", c.driver, c.src, err, c.err)
			continue
		}
		if err == nil && (got != c.want || !reflect.DeepEqual(args, c.args)) {
			t.Errorf("%s %q:\n got %q %v\nwant %q %v", c.driver, c.src, got, args, c.want, c.args)
		}
	}
}

func TestParamValues(t *testing.T) {
	spec := func(s string) paramSpec {
		p, err := parseParamSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range []struct {
		spec, raw string
		want      any
		ok        bool
	}{
		{"integer", "100", int64(100), true},
		{"integer", "1e2", int64(100), true},
		{"integer", "1.5", nil, false},
		{"integer", `"100"`, nil, false},
		{"integer min=1", "0", nil, false},
		{"integer max=10", "11", nil, false},
		{"integer", "99999999999999999999", nil, false},
		{"number", "12.50", decimalText("12.50"), true},
		{"number", `"12.50"`, nil, false},
		{"string", `"a\u00e9"`, "aé", true},
		{"string max_length=2", `"abc"`, nil, false},
		{"string", "true", nil, false},
		{"boolean", "true", true, true},
		{"boolean", "1", nil, false},
		{"any", `"x"`, "x", true},
		{"any", "7", int64(7), true},
		{"any", "7.5", decimalText("7.5"), true},
		{"any", "null", nil, false},
		{"any", "[1]", nil, false},
	} {
		v, err := spec(c.spec).value(json.RawMessage(c.raw))
		if (err == nil) != c.ok || (c.ok && v != c.want) {
			t.Errorf("%s %s: %v (%T) %v, want %v ok=%v", c.spec, c.raw, v, v, err, c.want, c.ok)
		}
	}
	for _, bad := range []string{"", "float", "integer min", "integer min=x", "string min=1", "boolean max=2"} {
		if _, err := parseParamSpec(bad); err == nil {
			t.Errorf("spec %q accepted", bad)
		}
	}
}

// TestIntegerParamExact: an integer parameter takes a JSON number only when it is exactly a
// whole number within int64, however it is written; a fraction, however small, is refused
// with the parameter's name, never rounded to a neighbouring integer. A huge exponent costs
// nothing.
func TestIntegerParamExact(t *testing.T) {
	p, err := parseParamSpec("integer")
	if err != nil {
		t.Fatal(err)
	}
	for raw, want := range map[string]int64{
		"0": 0, "-0": 0, "100": 100, "1e2": 100, "1E+2": 100, "1.5e1": 15, "100.000": 100, "10000000000000000000e-1": 1e18,
		"9223372036854775807": math.MaxInt64, "-9223372036854775808": math.MinInt64, "9.223372036854775807e18": math.MaxInt64,
		"0e999999999": 0, "0.0e-999999999": 0,
	} {
		v, err := p.value(json.RawMessage(raw))
		if err != nil || v != want {
			t.Errorf("integer %s: %v (%T) %v, want %d", raw, v, v, err, want)
		}
	}
	hugeExp := "1e" + strings.Repeat("9", 100000)
	for _, raw := range []string{
		"0.99999999999999999", "1.0000000000000001", "4503599627370496.5", "100.000000000000001", "1.5",
		"1e-400", "-0.0000000000000000001", "9223372036854775807.5", "9223372036854775808", "-9223372036854775809",
		"1e19", "1e999999999", "-1e999999999", "1e-999999999", hugeExp, "1" + strings.Repeat("0", 100000),
		"01", "1.", "1e", "--1", "1.5.5", "1e+-2",
	} {
		start := time.Now()
		if v, err := p.value(json.RawMessage(raw)); err == nil {
			t.Errorf("integer accepted %.40s as %v (%T)", raw, v, v)
		}
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Errorf("integer %.40s took %v", raw, d)
		}
	}
	ops, err := CompileOperations(map[string]OperationConfig{"wallet.debit": {SQL: "UPDATE w SET b = b - :amount",
		Params: map[string]string{"amount": "integer min=1"}}}, driverOfTest)
	if err != nil {
		t.Fatal(err)
	}
	op, _ := ops.Lookup("wallet", "debit")
	_, err = op.Bind(map[string]json.RawMessage{"amount": json.RawMessage("0.99999999999999999")})
	var pe *ParamError
	if !errors.As(err, &pe) || pe.Param != "amount" || pe.Reason != "must be an integer from -9223372036854775808 to 9223372036854775807, not 0.99999999999999999" {
		t.Errorf("0.99999999999999999 for integer min=1: %v", err)
	}
	_, err = op.Bind(map[string]json.RawMessage{"amount": json.RawMessage(hugeExp)})
	if !errors.As(err, &pe) || pe.Param != "amount" || len(pe.Reason) > 150 {
		t.Errorf("%.20s... for integer: %v", hugeExp, err)
	}
}

// TestDecimalParamValues: a number parameter, or an any one given a fraction, an exponent or
// an integer past int64, is read exactly into its plain decimal text (trailing zeros as
// written), and refused, naming the limits, past 35 digits before the point or 30 after it:
// MySQL's DECIMAL(65,30) would clip or round it silently.
func TestDecimalParamValues(t *testing.T) {
	nines35, nines30 := strings.Repeat("9", 35), strings.Repeat("9", 30)
	zeros30 := strings.Repeat("0", 30)
	for _, c := range []struct{ kind, raw, want string }{
		{"number", "12.50", "12.50"},
		{"number", "-12.5", "-12.5"},
		{"number", "0", "0"},
		{"number", "-0.0", "0.0"},
		{"number", "1e2", "100"},
		{"number", "1.50e1", "15.0"},
		{"number", "15e-1", "1.5"},
		{"number", "150E-2", "1.50"},
		{"number", "0.000001", "0.000001"},
		{"number", "1e-30", "0." + zeros30[1:] + "1"},
		{"number", "1e34", "1" + strings.Repeat("0", 34)},
		{"number", nines35 + "." + nines30, nines35 + "." + nines30},
		{"number", "-" + nines35 + "." + nines30, "-" + nines35 + "." + nines30},
		{"number", "1." + zeros30 + "000000", "1." + zeros30},
		{"number", "0e999999999", "0"},
		{"number", "0.0e-999999999", "0." + zeros30},
		{"number", "99999999999999999999", "99999999999999999999"},
		{"any", "7.5", "7.5"},
		{"any", "1e2", "100"},
		{"any", "99999999999999999999", "99999999999999999999"},
	} {
		v, err := paramSpec{kind: kindNames[c.kind]}.value(json.RawMessage(c.raw))
		if err != nil || v != decimalText(c.want) {
			t.Errorf("%s %.50s: %v (%T) %v, want %s", c.kind, c.raw, v, v, err, c.want)
		}
	}
	for _, kind := range []string{"number", "any"} {
		for _, raw := range []string{
			"1e35", "1" + nines35, nines35 + ".5e1", "1e-31", "0." + zeros30 + "1", "1." + nines30 + "9", "1e400", "1e-400",
			"1e999999999", "-1e-999999999", "1e" + strings.Repeat("9", 100000), "01.5", "1.", "1e", "-", "1.5x",
		} {
			start := time.Now()
			if v, err := (paramSpec{kind: kindNames[kind]}).value(json.RawMessage(raw)); err == nil {
				t.Errorf("%s accepted %.50s as %v", kind, raw, v)
			}
			if d := time.Since(start); d > 100*time.Millisecond {
				t.Errorf("%s %.40s took %v", kind, raw, d)
			}
		}
	}
	ops, err := CompileOperations(map[string]OperationConfig{"ledger.credit": {SQL: "UPDATE w SET b = b + :amount",
		Params: map[string]string{"amount": "number"}}}, driverOfTest)
	if err != nil {
		t.Fatal(err)
	}
	op, _ := ops.Lookup("ledger", "credit")
	_, err = op.Bind(map[string]json.RawMessage{"amount": json.RawMessage("1e35")})
	var pe *ParamError
	if !errors.As(err, &pe) || pe.Param != "amount" || pe.Reason != "must be a decimal of at most 35 digits before the point and 30 after it, not 1e35" {
		t.Errorf("1e35 for number: %v", err)
	}
}

// TestDecimalPlaceholders: on MySQL a number parameter's placeholder is cast to
// DECIMAL(65,30) in the compiled statement, and an any parameter's at Run when it is given a
// decimal (bound as text either way); PostgreSQL's placeholders stay bare, the type inferred.
func TestDecimalPlaceholders(t *testing.T) {
	const src = "UPDATE w SET b = b - :amount WHERE id = :account AND b >= :amount LIMIT :n"
	ops, err := CompileOperations(map[string]OperationConfig{
		"wallet.number": {SQL: src, Params: map[string]string{"amount": "number", "n": "integer"}},
		"wallet.any":    {SQL: src},
		"ledger.number": {SQL: src, Params: map[string]string{"amount": "number"}},
		"ledger.any":    {SQL: src},
	}, driverOfTest)
	if err != nil {
		t.Fatal(err)
	}
	const cast = "UPDATE w SET b = b - CAST(? AS DECIMAL(65,30)) WHERE id = ? AND b >= CAST(? AS DECIMAL(65,30)) LIMIT ?"
	const plain = "UPDATE w SET b = b - ? WHERE id = ? AND b >= ? LIMIT ?"
	const pg = "UPDATE w SET b = b - $1 WHERE id = $2 AND b >= $1 LIMIT $3"
	params := func(amount string) map[string]json.RawMessage {
		return map[string]json.RawMessage{"amount": json.RawMessage(amount), "account": json.RawMessage(`"A"`), "n": json.RawMessage("1")}
	}
	for _, c := range []struct {
		op, amount string
		compiled   string // SQL()
		run        string // the statement Run sends
		args       []any  // the arguments Run binds
	}{
		{"wallet.number", "0.01", cast, cast, []any{"0.01", "A", "0.01", int64(1)}},
		{"wallet.number", "5", cast, cast, []any{"5", "A", "5", int64(1)}},
		{"wallet.any", "0.01", plain, cast, []any{"0.01", "A", "0.01", int64(1)}},
		{"wallet.any", "5", plain, plain, []any{int64(5), "A", int64(5), int64(1)}},
		{"ledger.number", "1e-2", pg, pg, []any{"0.01", "A", int64(1)}},
		{"ledger.any", "0.01", pg, pg, []any{"0.01", "A", int64(1)}},
	} {
		res, name, _ := strings.Cut(c.op, ".")
		op, _ := ops.Lookup(res, name)
		if q, _ := op.SQL(); q != c.compiled {
			t.Errorf("%s compiled:\n got %s\nwant %s", c.op, q, c.compiled)
		}
		args, err := op.Bind(params(c.amount))
		if err != nil {
			t.Fatalf("%s %s: %v", c.op, c.amount, err)
		}
		q, args := op.statement(args)
		if q != c.run || !reflect.DeepEqual(args, c.args) {
			t.Errorf("%s %s runs:\n %s %#v\nwant %s %#v", c.op, c.amount, q, args, c.run, c.args)
		}
	}
}

// FuzzCompileSQL: the named-parameter compiler never panics, and what it accepts keeps every
// byte outside parameters and has one placeholder per parameter occurrence.
func FuzzCompileSQL(f *testing.F) {
	for _, s := range []string{"UPDATE w SET b = b - :amount WHERE id = :account", "SELECT $$:x$$, :y::int", "SELECT 'a'':b', `c`, \"d\" -- :e", "/* :x */ :y"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, src string, pg bool) {
		driver := "mysql"
		if pg {
			driver = "postgres"
		}
		out, args, err := compileSQL(src, driver)
		if err != nil {
			return
		}
		for _, a := range args {
			if a == "" || !isIdentStart(a[0]) {
				t.Fatalf("argument name %q from %q", a, src)
			}
		}
		if !pg && strings.Count(out, "?") != len(args)+strings.Count(src, "?") {
			t.Fatalf("%q -> %q has %d placeholders for %d arguments", src, out, strings.Count(out, "?"), len(args))
		}
	})
}

func driverOfTest(r string) (string, error) {
	switch r {
	case "wallet":
		return "mysql", nil
	case "ledger", "ops.eu":
		return "postgres", nil
	case "broker":
		return "broker", nil
	}
	return "", errors.New("unknown")
}

// TestCompileOperations: every bad operation is refused with its name and what is wrong,
// all of them at once; a good set compiles.
func TestCompileOperations(t *testing.T) {
	good := OperationConfig{SQL: "UPDATE w SET b = b - :amount WHERE id = :account", ExpectRows: 1,
		Params: map[string]string{"amount": "integer min=1"}}
	for _, c := range []struct {
		name string
		ops  map[string]OperationConfig
		want []string // substrings of the error; none: compiles
	}{
		{"good", map[string]OperationConfig{"wallet.debit": good, "ledger.debit": good, "ops.eu.credit": good}, nil},
		{"no dot", map[string]OperationConfig{"debit": good}, []string{"operations.debit: the key must be <resource>.<operation>"}},
		{"trailing dot", map[string]OperationConfig{"wallet.": good}, []string{"operations.wallet.: the key"}},
		{"unknown resource", map[string]OperationConfig{"bank.debit": good}, []string{`operations.bank.debit: resource "bank" is not in resources`}},
		{"broker resource", map[string]OperationConfig{"broker.debit": good}, []string{`operations.broker.debit: resource "broker" is a broker resource, not a database`}},
		{"negative expect_rows", map[string]OperationConfig{"wallet.debit": {SQL: "SELECT 1", ExpectRows: -1}},
			[]string{"operations.wallet.debit.expect_rows -1: must not be negative"}},
		{"empty sql", map[string]OperationConfig{"wallet.debit": {SQL: " "}}, []string{"operations.wallet.debit.sql: empty statement"}},
		{"positional parameter", map[string]OperationConfig{"wallet.debit": {SQL: "SELECT ?"}}, []string{"operations.wallet.debit.sql: '?' at byte 7"}},
		{"param not in sql", map[string]OperationConfig{"wallet.debit": {SQL: "SELECT :a", Params: map[string]string{"b": "integer"}}},
			[]string{"operations.wallet.debit.params.b: the SQL has no :b"}},
		{"bad param type", map[string]OperationConfig{"wallet.debit": {SQL: "SELECT :a", Params: map[string]string{"a": "float"}}},
			[]string{"operations.wallet.debit.params.a: type \"float\""}},
		{"two bad, both named", map[string]OperationConfig{"wallet.debit": {SQL: ""}, "ledger.credit": {SQL: "SELECT $1"}, "wallet.ok": good},
			[]string{"operations.wallet.debit.sql", "operations.ledger.credit.sql: positional parameter"}},
	} {
		ops, err := CompileOperations(c.ops, driverOfTest)
		if len(c.want) == 0 {
			if err != nil || ops.Len() != len(c.ops) {
				t.Errorf("%s: %v, %d operations", c.name, err, ops.Len())
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: compiled", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", c.name, err, w)
			}
		}
	}
}

// TestOperationsLookupAndBind: lookup by resource and name, and Bind's parameter errors.
func TestOperationsLookupAndBind(t *testing.T) {
	ops, err := CompileOperations(map[string]OperationConfig{
		"wallet.debit":  {SQL: "UPDATE w SET b = b - :amount WHERE id = :account AND b >= :amount", Params: map[string]string{"amount": "integer min=1"}},
		"wallet.credit": {SQL: "UPDATE w SET b = b + :amount WHERE id = :account"},
		"ops.eu.credit": {SQL: "UPDATE w SET b = b + :amount WHERE id = :account"},
	}, driverOfTest)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ops.Lookup("ops", "eu.credit"); ok {
		t.Error("an operation name with a dot was found")
	}
	if op, ok := ops.Lookup("ops.eu", "credit"); !ok || op.Resource() != "ops.eu" {
		t.Errorf("ops.eu credit: %v %v", op, ok)
	}
	if got := ops.Names("wallet"); !reflect.DeepEqual(got, []string{"credit", "debit"}) {
		t.Errorf("names of wallet: %v", got)
	}
	var none *Operations
	if _, ok := none.Lookup("wallet", "debit"); ok || none.Len() != 0 || len(none.Names("wallet")) != 0 {
		t.Error("nil operations are not empty")
	}
	op, _ := ops.Lookup("wallet", "debit")
	args, err := op.Bind(map[string]json.RawMessage{"amount": json.RawMessage("5"), "account": json.RawMessage(`"A"`)})
	if err != nil || !reflect.DeepEqual(args, []any{int64(5), "A", int64(5)}) {
		t.Fatalf("bind: %v %v", args, err)
	}
	for _, c := range []struct {
		params map[string]json.RawMessage
		param  string
		reason string
	}{
		{map[string]json.RawMessage{"amount": json.RawMessage("5")}, "account", "is missing: wallet.debit needs account, amount"},
		{map[string]json.RawMessage{"amount": json.RawMessage("0"), "account": json.RawMessage(`"A"`)}, "amount", "must be at least 1, not 0"},
		{map[string]json.RawMessage{"amount": json.RawMessage("1"), "account": json.RawMessage(`"A"`), "x": json.RawMessage("1")}, "x",
			"is not a parameter of wallet.debit (its parameters: account, amount)"},
	} {
		_, err := op.Bind(c.params)
		var pe *ParamError
		if !errors.As(err, &pe) || pe.Param != c.param || pe.Reason != c.reason {
			t.Errorf("bind %v: %v, want %s %s", c.params, err, c.param, c.reason)
		}
	}
	if err := ops.Check(driverOfTest); err != nil {
		t.Errorf("check against the same resources: %v", err)
	}
	if err := ops.Check(func(string) (string, error) { return "mysql", nil }); err == nil || !strings.Contains(err.Error(), "operations.ops.eu.credit") {
		t.Errorf("check against other drivers: %v", err)
	}
}

// A string parameter reads as json.Unmarshal reads it, escapes or not.
func TestPlainJSONStringMatchesUnmarshal(t *testing.T) {
	for _, raw := range []string{`""`, `"A"`, `"été"`, `"a\"b"`, `"\u0041"`, `"x\ty"`, "\"x\ty\"", `"a"b"`, `"abc`, `"` + "\xff" + `"`} {
		var want string
		werr := json.Unmarshal([]byte(raw), &want)
		got, err := stringSpec().value(json.RawMessage(raw))
		if (werr != nil) != (err != nil) || werr == nil && got != want {
			t.Fatalf("value(%q) = %q, %v; json.Unmarshal: %q, %v", raw, got, err, want, werr)
		}
	}
}

func stringSpec() paramSpec { return paramSpec{kind: kindString} }

// A string parameter without escapes costs one allocation (the string), not a JSON decode.
func TestStringParamAllocatesOnce(t *testing.T) {
	raw := json.RawMessage(`"account-0001"`)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := stringSpec().value(raw); err != nil {
			t.Fatal(err)
		}
	}); n > 2 {
		t.Errorf("string parameter: %v allocations, want at most 2 (the string, its interface)", n)
	}
}
