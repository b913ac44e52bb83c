// Package linearcheck is test instrumentation: it records what clients saw of one topic's
// partitions (Recorder) and checks, with the porcupine linearizability checker, that every
// partition behaved as one append-only log seen at one instant per operation.
//
// The sequential specification (Model) is one partition:
//
//   - Produce(key, messages) appends the messages, contiguously and in order, at the end of the
//     log and answers their offsets. With an idempotency key already in the log it appends
//     nothing and answers the first offsets with duplicate set (API: a repeat returns the first
//     response). A request's messages are one unit, so they are contiguous in the partition:
//     the model reads "all or none" that way, and a broker interleaving two requests' messages
//     in one partition fails it.
//   - Fetch(offset, max) answers a prefix of the log from offset, at least one message when
//     offset is below the end (a fetch that returns nothing below the end would let a consumer
//     think it has caught up), at most max, and the end offset at that instant; an offset past
//     the end is out of range (416).
//
// Messages are identified by a string the test makes unique per message (its id); the tests
// compare the bytes themselves elsewhere. A fetched message is checked at its offset, so a
// message read before its produce was invoked, an offset given twice, a gap, a message that is
// gone or moved after being read, and a duplicate that answers other offsets are all illegal.
//
// Unknown outcomes. A produce whose answer never came (a timeout, a cut connection, 503
// outcome_unknown) may or may not have been applied. It is recorded as an open-ended operation:
// its return time is the end of time (math.MaxInt64), so porcupine may linearize it anywhere
// after its call, including after every other operation, where it has no visible effect; its
// step always succeeds and appends the messages unless the key is already there. A fetch
// without an answer observed nothing and is left out of the history.
//
// Partitions are independent logs, so each is checked on its own; a request spanning
// partitions is recorded as one produce per partition (its atomicity across partitions is
// checked elsewhere, by reading everything back).
package linearcheck

import (
	"fmt"
	"hash/fnv"
	"strings"

	"github.com/anishathalye/porcupine"
)

// ProduceInput is the request of a produce to one partition: the idempotency key ("" for none)
// and the ids of its messages, in request order.
type ProduceInput struct {
	Key  string
	Msgs []string
}

// ProduceOutput is what the produce answered. Unknown: no answer (open-ended operation).
type ProduceOutput struct {
	Offsets   []int64
	Duplicate bool
	Unknown   bool
}

// FetchInput is a fetch from offset of at most Max messages (0: no limit known to the test).
type FetchInput struct {
	Offset int64
	Max    int
}

// FetchOutput is what a fetch answered: the ids of the messages from the fetched offset on,
// and the end offset; or OutOfRange (416) with the end offset of the answer.
type FetchOutput struct {
	Msgs       []string
	EndOffset  int64
	OutOfRange bool
}

// entry is one message in the model's log: its id and the key of the request that wrote it.
type entry struct {
	id, key string
}

// backing holds log contents shared by many states. The checker explores many orders; states
// on the same path share one backing and only the length differs, so a step appends in O(1).
// Appending to a state shorter than its backing reuses the backing when the next entry is the
// same, and copies it (a fork) when it differs, so a state's prefix never changes under it.
// The checker runs one partition's search on one goroutine, and each Init makes a new backing.
type backing struct {
	entries []entry
	hashes  []uint64         // hashes[i]: hash of entries[:i+1]
	keyAt   map[string]int64 // offset of the first message of each key's request
}

// state is the model's state: the first n entries of b.
type state struct {
	b *backing
	n int64
}

func (s state) keyStart(key string) (int64, bool) {
	if key == "" {
		return 0, false
	}
	at, ok := s.b.keyAt[key]
	return at, ok && at < s.n
}

func (s state) hash() uint64 {
	if s.n == 0 {
		return 0
	}
	return s.b.hashes[s.n-1]
}

// append returns s with one request's messages appended.
func (s state) append(key string, msgs []string) state {
	b, n := s.b, s.n
	for i, id := range msgs {
		e := entry{id: id, key: key}
		if n < int64(len(b.entries)) {
			if b.entries[n] == e {
				n++
				continue
			}
			b = b.fork(n)
		}
		prev := uint64(0)
		if n > 0 {
			prev = b.hashes[n-1]
		}
		h := fnv.New64a()
		h.Write([]byte(e.id))
		h.Write([]byte{0})
		h.Write([]byte(e.key))
		b.entries = append(b.entries, e)
		b.hashes = append(b.hashes, prev*1099511628211^h.Sum64())
		if i == 0 && key != "" {
			b.keyAt[key] = n
		}
		n++
	}
	return state{b, n}
}

// fork copies the first n entries of b into a new backing.
func (b *backing) fork(n int64) *backing {
	nb := &backing{
		entries: append([]entry(nil), b.entries[:n]...),
		hashes:  append([]uint64(nil), b.hashes[:n]...),
		keyAt:   make(map[string]int64, len(b.keyAt)),
	}
	for k, at := range b.keyAt {
		if at < n {
			nb.keyAt[k] = at
		}
	}
	return nb
}

func equal(a, b state) bool {
	if a.n != b.n || a.hash() != b.hash() {
		return false
	}
	if a.b == b.b {
		return true
	}
	for i := int64(0); i < a.n; i++ {
		if a.b.entries[i] != b.b.entries[i] {
			return false
		}
	}
	return true
}

func step(st, in, out interface{}) (bool, interface{}) {
	s := st.(state)
	switch in := in.(type) {
	case ProduceInput:
		o := out.(ProduceOutput)
		start, seen := s.keyStart(in.Key)
		if o.Unknown {
			if seen {
				return true, s
			}
			return true, s.append(in.Key, in.Msgs)
		}
		if len(o.Offsets) != len(in.Msgs) {
			return false, s
		}
		if seen {
			// A repeat: the first offsets, marked duplicate, over the same messages.
			if !o.Duplicate {
				return false, s
			}
			for i, off := range o.Offsets {
				if off != start+int64(i) || start+int64(i) >= s.n || s.b.entries[off].id != in.Msgs[i] {
					return false, s
				}
			}
			return true, s
		}
		if o.Duplicate {
			return false, s
		}
		for i, off := range o.Offsets {
			if off != s.n+int64(i) {
				return false, s
			}
		}
		return true, s.append(in.Key, in.Msgs)
	case FetchInput:
		o := out.(FetchOutput)
		if o.OutOfRange {
			return (in.Offset > s.n || in.Offset < 0) && o.EndOffset == s.n, s
		}
		if in.Offset < 0 || in.Offset > s.n || o.EndOffset != s.n {
			return false, s
		}
		got := int64(len(o.Msgs))
		if in.Offset+got > s.n || (in.Max > 0 && len(o.Msgs) > in.Max) {
			return false, s
		}
		if got == 0 && in.Offset < s.n {
			return false, s
		}
		for i, id := range o.Msgs {
			if s.b.entries[in.Offset+int64(i)].id != id {
				return false, s
			}
		}
		return true, s
	}
	panic(fmt.Sprintf("linearcheck: unknown input %T", in))
}

// Model is the porcupine model of one partition (see the package documentation).
var Model = porcupine.Model{
	Init: func() interface{} {
		return state{b: &backing{keyAt: map[string]int64{}}}
	},
	Step:              step,
	Equal:             func(a, b interface{}) bool { return equal(a.(state), b.(state)) },
	Hash:              func(s interface{}) uint64 { return s.(state).hash() },
	DescribeOperation: describe,
	DescribeState: func(st interface{}) string {
		s := st.(state)
		return fmt.Sprintf("end %d", s.n)
	},
}

// describe renders one operation for reports and porcupine's visualization.
func describe(in, out interface{}) string {
	switch in := in.(type) {
	case ProduceInput:
		o := out.(ProduceOutput)
		k := in.Key
		if k == "" {
			k = "-"
		}
		res := fmt.Sprint(o.Offsets)
		switch {
		case o.Unknown:
			res = "unknown"
		case o.Duplicate:
			res += " duplicate"
		}
		return fmt.Sprintf("produce key=%s [%s] -> %s", k, strings.Join(in.Msgs, " "), res)
	case FetchInput:
		o := out.(FetchOutput)
		if o.OutOfRange {
			return fmt.Sprintf("fetch @%d max=%d -> 416 end=%d", in.Offset, in.Max, o.EndOffset)
		}
		return fmt.Sprintf("fetch @%d max=%d -> [%s] end=%d", in.Offset, in.Max, strings.Join(o.Msgs, " "), o.EndOffset)
	}
	return fmt.Sprintf("%v -> %v", in, out)
}
