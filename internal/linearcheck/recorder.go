package linearcheck

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Recorder collects the history of many concurrent clients. It is safe for concurrent use.
// Times are nanoseconds since the recorder was made, read from the monotonic clock, so a wall
// clock step cannot reorder operations.
//
// A client wraps each call:
//
//	call := rec.Produce(client, partition, key, ids) // just before sending
//	res, err := send()
//	switch {
//	case err == nil:       call.Produced(offsets, res.Duplicate)
//	case definitelyNot(err): call.Failed()   // refused before it could apply: no effect
//	default:               call.Unknown()    // timeout, cut connection, 503 outcome_unknown
//	}
//
// A call never finished by the end (the client was stopped) counts as Unknown.
type Recorder struct {
	start time.Time

	mu      sync.Mutex
	ops     map[int][]porcupine.Operation // by partition
	pending map[*Call]struct{}
}

// NewRecorder starts an empty history; its clock starts now.
func NewRecorder() *Recorder {
	return &Recorder{start: time.Now(), ops: map[int][]porcupine.Operation{}, pending: map[*Call]struct{}{}}
}

func (r *Recorder) now() int64 { return int64(time.Since(r.start)) }

// Call is one operation under way. Exactly one of its finishing methods is called, once.
type Call struct {
	r         *Recorder
	client    int
	partition int
	in        interface{}
	call      int64
}

// Produce records the invocation of a produce of the messages ids (in request order) to
// partition, with idempotency key ("" for none), by client (a small number, for reports).
func (r *Recorder) Produce(client, partition int, key string, ids []string) *Call {
	return r.begin(client, partition, ProduceInput{Key: key, Msgs: append([]string(nil), ids...)})
}

// Fetch records the invocation of a fetch of at most max messages (0: no limit) from offset.
func (r *Recorder) Fetch(client, partition int, offset int64, max int) *Call {
	return r.begin(client, partition, FetchInput{Offset: offset, Max: max})
}

func (r *Recorder) begin(client, partition int, in interface{}) *Call {
	c := &Call{r: r, client: client, partition: partition, in: in}
	r.mu.Lock()
	r.pending[c] = struct{}{}
	r.mu.Unlock()
	c.call = r.now() // after the bookkeeping: the call time is as late as it can be
	return c
}

// Produced records a produce's answer: the offsets of its messages in this partition, in
// request order, and whether the answer was a duplicate.
func (c *Call) Produced(offsets []int64, duplicate bool) {
	c.finish(ProduceOutput{Offsets: append([]int64(nil), offsets...), Duplicate: duplicate}, c.r.now())
}

// Fetched records a fetch's answer: the ids of the messages from the fetched offset on, and
// the end offset in the answer.
func (c *Call) Fetched(ids []string, endOffset int64) {
	c.finish(FetchOutput{Msgs: append([]string(nil), ids...), EndOffset: endOffset}, c.r.now())
}

// OutOfRange records a fetch answered 416 with the given end offset.
func (c *Call) OutOfRange(endOffset int64) {
	c.finish(FetchOutput{OutOfRange: true, EndOffset: endOffset}, c.r.now())
}

// Unknown records that no answer came: a produce becomes an open-ended operation, a fetch is
// dropped (it observed nothing).
func (c *Call) Unknown() {
	if _, ok := c.in.(FetchInput); ok {
		c.drop()
		return
	}
	c.finish(ProduceOutput{Unknown: true}, math.MaxInt64)
}

// Failed records that the call certainly had no effect (refused before it could apply, such
// as a 4xx or a connection refused before anything was sent); it is left out of the history.
func (c *Call) Failed() { c.drop() }

func (c *Call) drop() {
	c.r.mu.Lock()
	delete(c.r.pending, c)
	c.r.mu.Unlock()
}

func (c *Call) finish(out interface{}, ret int64) {
	c.r.mu.Lock()
	defer c.r.mu.Unlock()
	if _, ok := c.r.pending[c]; !ok {
		panic("linearcheck: a call was finished twice")
	}
	delete(c.r.pending, c)
	c.r.ops[c.partition] = append(c.r.ops[c.partition], porcupine.Operation{
		ClientId: c.client, Input: c.in, Call: c.call, Output: out, Return: ret,
	})
}

// History returns the operations recorded for partition so far, with calls still pending
// taken as unknown outcomes. The result is the recorder's own order (by finishing time).
func (r *Recorder) History(partition int) []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := append([]porcupine.Operation(nil), r.ops[partition]...)
	for c := range r.pending {
		if c.partition != partition {
			continue
		}
		if _, ok := c.in.(ProduceInput); ok {
			ops = append(ops, porcupine.Operation{ClientId: c.client, Input: c.in, Call: c.call, Output: ProduceOutput{Unknown: true}, Return: math.MaxInt64})
		}
	}
	return ops
}

// Partitions lists the partitions with recorded operations, in order.
func (r *Recorder) Partitions() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	ps := make([]int, 0, len(r.ops))
	for p := range r.ops {
		ps = append(ps, p)
	}
	sort.Ints(ps)
	return ps
}

// Result is the verdict on one partition's history.
type Result struct {
	Partition int
	Ops       int // operations checked
	Open      int // of which open-ended (unknown outcome)
	Dropped   int // open-ended operations Simplify removed before the check (CheckAll)
	Verdict   porcupine.CheckResult
	Took      time.Duration
	// Explain describes, when Verdict is Illegal, where the longest linearization found stops:
	// the operations around the first one that no order could place.
	Explain string
	Info    porcupine.LinearizationInfo // set when Illegal: for porcupine.VisualizePath
}

// Check checks one history against Model within timeout (0: no limit). A timeout gives
// porcupine.Unknown, which proves nothing either way.
//
// The plain check runs first; only an illegal history is checked again in verbose mode for
// the explanation. Verbose mode records the longest linearization through every operation at
// each backtrack, which on tens of thousands of operations costs far more than the check.
func Check(partition int, ops []porcupine.Operation, timeout time.Duration) Result {
	start := time.Now()
	verdict := porcupine.CheckOperationsTimeout(Model, ops, timeout)
	res := Result{Partition: partition, Ops: len(ops), Verdict: verdict, Took: time.Since(start)}
	if verdict == porcupine.Illegal {
		_, res.Info = porcupine.CheckOperationsVerbose(Model, ops, timeout)
	}
	for _, op := range ops {
		if op.Return == math.MaxInt64 {
			res.Open++
		}
	}
	if verdict == porcupine.Illegal {
		res.Explain = explain(ops, res.Info)
	}
	return res
}

// CheckAll checks every recorded partition, one after the other, each within timeout, after
// Simplify (completeRead as there: the caller asserts that the history ends with fetches
// that read every partition whole after all producers stopped).
func (r *Recorder) CheckAll(timeout time.Duration, completeRead bool) []Result {
	var out []Result
	for _, p := range r.Partitions() {
		ops := r.History(p)
		simple := Simplify(ops, completeRead)
		res := Check(p, simple, timeout)
		res.Dropped = len(ops) - len(simple)
		out = append(out, res)
	}
	return out
}

// explain lists the operations near the point where the longest partial linearization ends:
// the last ones it placed, then the unplaced operations that had been called by then, by call
// time. One of the latter is the operation no legal order can place.
func explain(ops []porcupine.Operation, info porcupine.LinearizationInfo) string {
	partials := info.PartialLinearizations()
	if len(partials) == 0 {
		return "(no partial linearization)"
	}
	var longest []int
	for _, l := range partials[0] {
		if len(l) > len(longest) {
			longest = l
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "longest linearizable order places %d of %d operations; its last steps:\n", len(longest), len(ops))
	placed := map[int]bool{}
	for _, id := range longest {
		placed[id] = true
	}
	from := len(longest) - 8
	if from < 0 {
		from = 0
	}
	for _, id := range longest[from:] {
		fmt.Fprintf(&b, "  %s\n", describeOp(ops[id]))
	}
	var unplaced []int
	for id := range ops {
		if !placed[id] {
			unplaced = append(unplaced, id)
		}
	}
	sort.Slice(unplaced, func(i, j int) bool { return ops[unplaced[i]].Call < ops[unplaced[j]].Call })
	if len(unplaced) > 10 {
		unplaced = unplaced[:10]
	}
	fmt.Fprintf(&b, "first operations it could not place (by call time):\n")
	for _, id := range unplaced {
		fmt.Fprintf(&b, "  %s\n", describeOp(ops[id]))
	}
	return b.String()
}

func describeOp(op porcupine.Operation) string {
	ret := "open"
	if op.Return != math.MaxInt64 {
		ret = time.Duration(op.Return).String()
	}
	return fmt.Sprintf("client %d [%v, %s] %s", op.ClientId, time.Duration(op.Call), ret, describe(op.Input, op.Output))
}
