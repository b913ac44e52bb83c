package linearcheck

import (
	"math"
	"slices"

	"github.com/anishathalye/porcupine"
)

// Simplify removes from one partition's history the produces with unknown outcome that
// provably had no visible effect, closes those whose effect another operation observed, and
// returns the result (the input is not changed).
//
// Open-ended operations are what makes checking expensive: each one may be placed at any
// point after its call, porcupine tries them, and its cache keeps a bitset of the whole history
// per state it visits. A one-minute run with twenty kills leaves hundreds and the search runs
// out of memory. Most of them are settled by the rest of the history, and these rewrites keep
// the verdict on a correct history while leaving every violation a violation:
//
//  1. Dropped: an unknown attempt whose idempotency key also has an attempt answered without
//     "duplicate". That answer appended the request, so no earlier attempt had; and after it
//     the key is stored, so a later application of the unknown attempt is a no-op. The attempt
//     did nothing in every legal execution. (If the broker did append it a second time, the
//     copy has no producer left in the history, and the check fails, as it should.)
//  2. Dropped, with completeRead: an unknown attempt none of whose messages any fetch
//     returned. The caller asserts that the history ends with fetches that read the whole
//     partition after every producer had stopped, so a message appended before them was seen;
//     the attempt was then never applied, or applied after everything recorded, where it is
//     invisible.
//  3. Closed: an unknown attempt whose request was observed, by a fetch returning one of its
//     messages or by a "duplicate" answer to its key, gets as return time the earliest return
//     of such an observer. One attempt of the request applied it before that moment; all its
//     attempts carry the same key and messages, so whichever is taken as the one that applied
//     changes nothing, and the others are no-ops wherever they fall. (A broker that applied
//     two attempts shows a second copy with no producer, again a failure.)
//  4. Dropped: every unknown attempt of a key but the earliest called, when they carry the same
//     messages (a retry). At most one attempt of a key applies; whichever it was and whenever
//     it applied, the earliest attempt, called no later, could have applied at that same
//     moment with the same effect, and all others are no-ops. Keeping them all costs the
//     checker every subset of them: a producer that retried every 20 ms while the server was
//     down leaves dozens, and the search never ends.
func Simplify(ops []porcupine.Operation, completeRead bool) []porcupine.Operation {
	freshKey := map[string]bool{}
	// observed: the earliest return of an operation that saw a message (by id) or a key
	// stored (by "key:" + key; ids and keys are kept apart by the prefix, ids get "id:").
	observed := map[string]int64{}
	see := func(what string, at int64) {
		if t, ok := observed[what]; !ok || at < t {
			observed[what] = at
		}
	}
	for _, op := range ops {
		switch in := op.Input.(type) {
		case ProduceInput:
			o := op.Output.(ProduceOutput)
			switch {
			case o.Unknown || in.Key == "":
			case o.Duplicate:
				see("key:"+in.Key, op.Return)
			default:
				freshKey[in.Key] = true
			}
		case FetchInput:
			for _, id := range op.Output.(FetchOutput).Msgs {
				see("id:"+id, op.Return)
			}
		}
	}
	// earliest: per key, the index of its earliest-called unknown attempt (rule 4).
	earliest := map[string]int{}
	for i, op := range ops {
		in, ok := op.Input.(ProduceInput)
		if !ok || in.Key == "" || !op.Output.(ProduceOutput).Unknown || op.Return != math.MaxInt64 {
			continue
		}
		if j, ok := earliest[in.Key]; !ok || op.Call < ops[j].Call {
			earliest[in.Key] = i
		}
	}
	out := make([]porcupine.Operation, 0, len(ops))
	for i, op := range ops {
		in, ok := op.Input.(ProduceInput)
		if ok && op.Output.(ProduceOutput).Unknown && op.Return == math.MaxInt64 {
			if in.Key != "" && freshKey[in.Key] {
				continue
			}
			if j, ok := earliest[in.Key]; ok && j != i && slices.Equal(ops[j].Input.(ProduceInput).Msgs, in.Msgs) {
				continue
			}
			at, seen := int64(math.MaxInt64), false
			if t, ok := observed["key:"+in.Key]; ok && in.Key != "" {
				at, seen = t, true
			}
			for _, id := range in.Msgs {
				if t, ok := observed["id:"+id]; ok && t < at {
					at, seen = t, true
				}
			}
			switch {
			case seen && at >= op.Call:
				op.Return = at
			case seen:
				// Observed before it was called: impossible for a correct broker. Keep it open
				// and let the check report the history.
			case completeRead:
				continue
			}
		}
		out = append(out, op)
	}
	return out
}
