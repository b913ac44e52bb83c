package gateway

import (
	"errors"
	"testing"

	"github.com/imagomq/imago/xa"
)

// FuzzDecodeGlobalRequest: the request decoder never panics and answers only *apiError 4xx.
func FuzzDecodeGlobalRequest(f *testing.F) {
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
			if _, args := st.op.SQL(); len(st.args) != len(args) {
				t.Fatalf("step has %d values for %d placeholders", len(st.args), len(args))
			}
		}
	})
}
