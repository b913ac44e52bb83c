package gateway

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
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
		{"number", "12.50", "12.50", true},
		{"number", `"12.50"`, nil, false},
		{"string", `"a\u00e9"`, "aé", true},
		{"string max_length=2", `"abc"`, nil, false},
		{"string", "true", nil, false},
		{"boolean", "true", true, true},
		{"boolean", "1", nil, false},
		{"any", `"x"`, "x", true},
		{"any", "7", int64(7), true},
		{"any", "7.5", "7.5", true},
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

// FuzzDecodeGlobalRequest: the request decoder never panics and answers only *apiError 4xx.
func FuzzDecodeGlobalRequest(f *testing.F) {
	ops, err := compileOperations(map[string]OperationConfig{
		"wallet.debit": {SQL: "UPDATE w SET b = b - :amount WHERE id = :account AND b >= :amount", ExpectRows: 1,
			Params: map[string]string{"amount": "integer min=1", "account": "string max_length=16"}},
		"ledger.credit": {SQL: "UPDATE l SET b = b + :amount WHERE id = :account"},
	}, func(r string) (string, error) {
		switch r {
		case "wallet":
			return "mysql", nil
		case "ledger":
			return "postgres", nil
		}
		return "", errors.New("unknown")
	})
	if err != nil {
		f.Fatal(err)
	}
	driverOf := func(r string) (string, error) {
		if r == "wallet" || r == "ledger" {
			return "x", nil
		}
		return "", errors.New("unknown")
	}
	for _, s := range []string{
		`{"id": "t-1", "timeout_ms": 100, "steps": [{"resource": "wallet", "operation": "debit", "params": {"account": "A", "amount": 1}}], "messages": [{"topic": "t", "value": 1}]}`,
		`{"steps": [{"resource": "ledger", "operation": "credit", "params": {"account": 1, "amount": 2.5}}]}`,
		`{"steps": [{"resource": "x"}]}`, `{"messages": [{"topic": "t", "value_base64": "AA=="}]}`, `[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeGlobalRequest(body, ops, driverOf)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status < 400 || ae.status >= 500 {
				t.Fatalf("error %v for %q is not a 4xx", err, body)
			}
			return
		}
		if len(req.steps) == 0 && len(req.msgs) == 0 {
			t.Fatalf("accepted a request with nothing to do: %q", body)
		}
		for _, st := range req.steps {
			if len(st.args) != len(st.op.args) {
				t.Fatalf("step has %d values for %d placeholders", len(st.args), len(st.op.args))
			}
		}
	})
}
