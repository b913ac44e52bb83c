package linearcheck

import (
	"math"

	"github.com/anishathalye/porcupine"
)

// Simplify removes from one partition's history the produces with unknown outcome that
// provably had no visible effect, and returns the rest (the input is not changed).
//
// Open-ended operations are what makes checking expensive: each one may be placed at any
// point after its call, and porcupine tries them. A long run with many kills leaves hundreds,
// and the search no longer ends in reasonable time. Most of them are attempts whose fate is
// settled by the rest of the history, and removing them does not change the verdict of a
// correct history while keeping every violation a violation:
//
//  1. An unknown attempt whose idempotency key also has an attempt answered without
//     "duplicate". That answer appended the request, so no earlier attempt had; and after it
//     the key is stored, so a later application of the unknown attempt is a no-op. The attempt
//     did nothing in every legal execution. (If the broker did append it a second time, the
//     copy has no producer left in the history, and the check fails, as it should.)
//  2. With completeRead: an unknown attempt none of whose messages any fetch returned. The
//     caller asserts that the history ends with fetches that read the whole partition after
//     every producer had stopped, so a message appended before them was seen; the attempt was
//     then never applied, or applied after everything recorded, where it is invisible.
//
// Attempts that were applied and only answered by a later "duplicate" are kept: they carry
// the append, and the duplicate answer is checked against them.
func Simplify(ops []porcupine.Operation, completeRead bool) []porcupine.Operation {
	freshKey := map[string]bool{}
	seen := map[string]bool{}
	for _, op := range ops {
		switch in := op.Input.(type) {
		case ProduceInput:
			o := op.Output.(ProduceOutput)
			if !o.Unknown && !o.Duplicate && in.Key != "" {
				freshKey[in.Key] = true
			}
		case FetchInput:
			for _, id := range op.Output.(FetchOutput).Msgs {
				seen[id] = true
			}
		}
	}
	out := make([]porcupine.Operation, 0, len(ops))
	for _, op := range ops {
		in, ok := op.Input.(ProduceInput)
		if ok && op.Output.(ProduceOutput).Unknown && op.Return == math.MaxInt64 {
			if in.Key != "" && freshKey[in.Key] {
				continue
			}
			if completeRead && !anySeen(in.Msgs, seen) {
				continue
			}
		}
		out = append(out, op)
	}
	return out
}

func anySeen(ids []string, seen map[string]bool) bool {
	for _, id := range ids {
		if seen[id] {
			return true
		}
	}
	return false
}
