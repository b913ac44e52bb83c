package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/imagomq/imago/xa"
)

// testGlobalOps are the operations the global request tests decode against: wallet.debit and
// ledger.credit, with the driver lookup of their resources.
func testGlobalOps(tb testing.TB) (*xa.Operations, func(string) (string, error)) {
	tb.Helper()
	ops, err := xa.CompileOperations(map[string]xa.OperationConfig{
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
		tb.Fatal(err)
	}
	return ops, func(r string) (string, error) {
		if r == "wallet" || r == "ledger" {
			return "x", nil
		}
		return "", errors.New("unknown")
	}
}

// TestDecodeGlobalRepeatedFields: a name given twice in a global transaction body (at the top,
// in a step, among a step's params) or in a resolve body is a 400 naming it, as in produce and
// transaction bodies, never the last one silently winning.
func TestDecodeGlobalRepeatedFields(t *testing.T) {
	ops, driverOf := testGlobalOps(t)
	const step = `{"resource": "wallet", "operation": "debit", "params": {"account": "A", "amount": 5}}`
	const msg = `[{"topic": "t", "value": 1}]`
	cases := []struct {
		name, body, code, field string
	}{
		{"id", `{"id": "a", "id": "b", "messages": ` + msg + `}`, "invalid_field", "id"},
		{"timeout_ms", `{"timeout_ms": 100, "messages": ` + msg + `, "timeout_ms": 200}`, "invalid_field", "timeout_ms"},
		{"steps", `{"steps": [], "steps": [` + step + `]}`, "invalid_field", "steps"},
		{"messages", `{"messages": ` + msg + `, "messages": ` + msg + `}`, "invalid_field", "messages"},
		{"escaped name", `{"id": "a", "\u0069d": "b", "messages": ` + msg + `}`, "invalid_field", "id"},
		{"step resource", `{"steps": [{"resource": "ledger", "resource": "wallet", "operation": "debit"}]}`, "invalid_field", "steps[0].resource"},
		{"step param", `{"steps": [` + step + `, {"resource": "wallet", "operation": "debit", "params": {"account": "A", "amount": 1, "amount": 1000}}]}`,
			"invalid_parameter", "steps[1].params.amount"},
		{"message field", `{"messages": [{"topic": "t", "value": 1, "value": 2}]}`, "invalid_field", "messages[0].value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeGlobalRequest([]byte(c.body), ops, driverOf)
			if err == nil {
				t.Fatalf("%s: accepted; want 400 %s on %s", c.body, c.code, c.field)
			}
			if ae := errorFor(err); ae.status != 400 || ae.code != c.code || ae.field != c.field {
				t.Fatalf("%s: %v; want 400 %s on %s", c.body, err, c.code, c.field)
			}
		})
	}
	if _, err := decodeResolveRequest([]byte(`{"decision": "commit", "decision": "rollback"}`)); err == nil ||
		errorFor(err).code != "invalid_field" || errorFor(err).field != "decision" {
		t.Fatalf("resolve with decision twice: %v; want 400 invalid_field on decision", err)
	}

	// The same names once each still decode, values intact.
	req, err := decodeGlobalRequest([]byte(`{"id": "a", "timeout_ms": 100, "steps": [`+step+`], "messages": `+msg+`}`), ops, driverOf)
	if err != nil {
		t.Fatal(err)
	}
	if req.id != "a" || req.timeoutMS != 100 || len(req.steps) != 1 || len(req.msgs) != 1 || fmt.Sprint(req.steps[0].args) != "[5 A 5]" {
		t.Fatalf("decoded %+v (args %v)", req, req.steps[0].args)
	}
}

// TestDecodeGlobalExactNumbers: step numbers are read exactly. An integer parameter given a
// fraction a float64 would round to an integer, and a decimal past 35 digits before the point
// or 30 after it, are 400 invalid_parameter naming the parameter (and the limits).
func TestDecodeGlobalExactNumbers(t *testing.T) {
	ops, driverOf := testGlobalOps(t)
	step := func(res, op, amount string) string {
		return `{"steps": [{"resource": "` + res + `", "operation": "` + op + `", "params": {"account": "A", "amount": ` + amount + `}}]}`
	}
	for _, c := range []struct{ body, message string }{
		{step("wallet", "debit", "0.99999999999999999"), "must be an integer from"},
		{step("wallet", "debit", "1e-400"), "must be an integer from"},
		{step("wallet", "debit", "1e999999999"), "must be an integer from"},
		{step("ledger", "credit", "1e35"), "at most 35 digits before the point and 30 after it"},
		{step("ledger", "credit", "0.0000000000000000000000000000001"), "at most 35 digits before the point and 30 after it"},
	} {
		_, err := decodeGlobalRequest([]byte(c.body), ops, driverOf)
		if err == nil {
			t.Errorf("%s: accepted", c.body)
			continue
		}
		if ae := errorFor(err); ae.status != 400 || ae.code != "invalid_parameter" || ae.field != "steps[0].params.amount" ||
			!strings.Contains(ae.message, c.message) {
			t.Errorf("%.80s: %v; want 400 invalid_parameter on steps[0].params.amount saying %q", c.body, err, c.message)
		}
	}
	req, err := decodeGlobalRequest([]byte(step("wallet", "debit", "1.5e1")), ops, driverOf)
	if err != nil || fmt.Sprint(req.steps[0].args) != "[15 A 15]" {
		t.Fatalf("1.5e1 for an integer parameter: %v", err)
	}
	req, err = decodeGlobalRequest([]byte(step("ledger", "credit", "1.5e1")), ops, driverOf)
	if err != nil || fmt.Sprint(req.steps[0].args) != "[15 A]" {
		t.Fatalf("1.5e1 for an any parameter: %v", err)
	}
}

// FuzzDecodeGlobalRequest: the request decoder never panics and answers only *apiError 4xx.
func FuzzDecodeGlobalRequest(f *testing.F) {
	ops, driverOf := testGlobalOps(f)
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
			if _, args := st.op.SQL(); len(st.args) != len(args) {
				t.Fatalf("step has %d values for %d placeholders", len(st.args), len(args))
			}
		}
	})
}

// stringField and rawElements answer what encoding/json answers for the same text.
func TestGlobalDecodeHelpersMatchEncodingJSON(t *testing.T) {
	for _, raw := range []string{`""`, `"a"`, `"wallet"`, `"a\"b"`, `"\u00e9t\u00e9"`, `"été"`, `"tab\there"`, `"\\"`, `"\ud83d\ude00"`, `"x\u2028y"`} {
		var want string
		if err := json.Unmarshal([]byte(raw), &want); err != nil {
			t.Fatal(raw, err)
		}
		got, err := stringField(json.RawMessage(raw), "f")
		if err != nil || got != want {
			t.Fatalf("stringField(%s) = %q, %v; want %q", raw, got, err, want)
		}
	}
	for _, raw := range []string{`[]`, `[ ]`, `[1]`, `[ {"a": [1, {"b": 2}]} , "x",null,[[]] ]`, "[\n{}\n,\t{}\r\n]"} {
		var want []json.RawMessage
		if err := json.Unmarshal([]byte(raw), &want); err != nil {
			t.Fatal(raw, err)
		}
		got, err := rawElements([]byte(raw))
		if err != nil || len(got) != len(want) {
			t.Fatalf("rawElements(%s) = %q, %v; want %q", raw, got, err, want)
		}
		for i := range want {
			if string(got[i]) != string(want[i]) {
				t.Fatalf("rawElements(%s)[%d] = %s, want %s", raw, i, got[i], want[i])
			}
		}
	}
}

// A step field without escapes costs one allocation (the string), not a JSON decode.
func TestStringFieldAllocatesOnce(t *testing.T) {
	raw := json.RawMessage(`"wallet"`)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := stringField(raw, "f"); err != nil {
			t.Fatal(err)
		}
	}); n > 1 {
		t.Errorf("stringField: %v allocations, want at most 1", n)
	}
}
