package gateway

import (
	"errors"
	"fmt"
	"testing"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/xa"
)

// lastSteps marks, for a transaction that commits in two phases, the last step on each
// resource (its branch may prepare with it), and nothing for a transaction that commits in one
// phase (a prepared branch could not).
func TestLastSteps(t *testing.T) {
	ops, err := xa.CompileOperations(map[string]xa.OperationConfig{
		"wallet.debit":  {SQL: "UPDATE w SET b = b - :amount WHERE id = :account"},
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
		t.Fatal(err)
	}
	w, _ := ops.Lookup("wallet", "debit")
	l, _ := ops.Lookup("ledger", "credit")
	steps := func(ops ...*xa.Operation) []globalStep {
		var out []globalStep
		for _, op := range ops {
			out = append(out, globalStep{op: op})
		}
		return out
	}
	for _, tc := range []struct {
		name string
		req  globalRequest
		want []bool
	}{
		{"two resources", globalRequest{steps: steps(w, l)}, []bool{true, true}},
		{"two resources, repeated", globalRequest{steps: steps(l, w, l, w)}, []bool{false, false, true, true}},
		{"one resource", globalRequest{steps: steps(l, l)}, []bool{false, false}},
		{"one resource and messages", globalRequest{steps: steps(l, l), msgs: make([]broker.TxMessage, 1)}, []bool{false, true}},
		{"one resource and a client id", globalRequest{id: "t-1", steps: steps(l)}, []bool{true}},
	} {
		if got := lastSteps(tc.req); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
