package linearcheck

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/anishathalye/porcupine"
)

// savedOp is one operation of a saved history: exactly one of Produce and Fetch is set, with
// its output beside it.
type savedOp struct {
	Client     int            `json:"client"`
	Call       int64          `json:"call"`
	Return     int64          `json:"return"`
	Produce    *ProduceInput  `json:"produce,omitempty"`
	Produced   *ProduceOutput `json:"produced,omitempty"`
	Fetch      *FetchInput    `json:"fetch,omitempty"`
	FetchedOut *FetchOutput   `json:"fetched,omitempty"`
}

// SaveHistory writes one partition's history to path as JSON, so that a verdict the checker
// could not reach in a test (porcupine.Unknown) or an illegal one can be checked again and
// studied outside the run that produced it (LoadHistory).
func SaveHistory(path string, ops []porcupine.Operation) error {
	saved := make([]savedOp, 0, len(ops))
	for _, op := range ops {
		s := savedOp{Client: op.ClientId, Call: op.Call, Return: op.Return}
		switch in := op.Input.(type) {
		case ProduceInput:
			out := op.Output.(ProduceOutput)
			s.Produce, s.Produced = &in, &out
		case FetchInput:
			out := op.Output.(FetchOutput)
			s.Fetch, s.FetchedOut = &in, &out
		default:
			return fmt.Errorf("save history: unknown input %T", op.Input)
		}
		saved = append(saved, s)
	}
	b, err := json.Marshal(saved)
	if err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	return os.WriteFile(path, b, 0o644)
}

// LoadHistory reads a history SaveHistory wrote.
func LoadHistory(path string) ([]porcupine.Operation, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load history: %w", err)
	}
	var saved []savedOp
	if err := json.Unmarshal(b, &saved); err != nil {
		return nil, fmt.Errorf("load history %s: %w", path, err)
	}
	ops := make([]porcupine.Operation, 0, len(saved))
	for i, s := range saved {
		op := porcupine.Operation{ClientId: s.Client, Call: s.Call, Return: s.Return}
		switch {
		case s.Produce != nil && s.Produced != nil:
			op.Input, op.Output = *s.Produce, *s.Produced
		case s.Fetch != nil && s.FetchedOut != nil:
			op.Input, op.Output = *s.Fetch, *s.FetchedOut
		default:
			return nil, fmt.Errorf("load history %s: operation %d is neither a produce nor a fetch", path, i)
		}
		ops = append(ops, op)
	}
	return ops, nil
}
