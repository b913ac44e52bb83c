package linearcheck

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

const open = math.MaxInt64

func prod(client int, call, ret int64, key string, ids []string, offsets ...int64) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Call: call, Return: ret,
		Input: ProduceInput{Key: key, Msgs: ids}, Output: ProduceOutput{Offsets: offsets}}
}

func dup(client int, call, ret int64, key string, ids []string, offsets ...int64) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Call: call, Return: ret,
		Input: ProduceInput{Key: key, Msgs: ids}, Output: ProduceOutput{Offsets: offsets, Duplicate: true}}
}

func unknown(client int, call int64, key string, ids ...string) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Call: call, Return: open,
		Input: ProduceInput{Key: key, Msgs: ids}, Output: ProduceOutput{Unknown: true}}
}

func fetch(client int, call, ret int64, offset int64, max int, end int64, ids ...string) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Call: call, Return: ret,
		Input: FetchInput{Offset: offset, Max: max}, Output: FetchOutput{Msgs: ids, EndOffset: end}}
}

func oor(client int, call, ret int64, offset int64, end int64) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Call: call, Return: ret,
		Input: FetchInput{Offset: offset}, Output: FetchOutput{OutOfRange: true, EndOffset: end}}
}

func ids(s ...string) []string { return s }

func TestModelHistories(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ok    bool
		ops   []porcupine.Operation
		notes string
	}{
		{name: "sequential produce and fetch", ok: true, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a", "b"), 0, 1),
			prod(0, 3, 4, "k2", ids("c"), 2),
			fetch(1, 5, 6, 0, 10, 3, "a", "b", "c"),
			fetch(1, 7, 8, 1, 1, 3, "b"),
			fetch(1, 9, 10, 3, 10, 3),
			oor(1, 11, 12, 4, 3),
		}},
		{name: "concurrent produces in either order", ok: true, ops: []porcupine.Operation{
			prod(0, 1, 10, "k1", ids("a"), 1),
			prod(1, 2, 9, "k2", ids("b"), 0),
			fetch(2, 3, 8, 0, 10, 1, "b"), // sees b before a: fine, they overlap
			fetch(2, 11, 12, 0, 10, 2, "b", "a"),
		}},
		{name: "fetch concurrent with produce sees it or not", ok: true, ops: []porcupine.Operation{
			prod(0, 1, 10, "k1", ids("a"), 0),
			fetch(1, 2, 3, 0, 10, 0),
			fetch(1, 4, 5, 0, 10, 1, "a"),
		}},
		{name: "open-ended produce applied, seen later", ok: true, ops: []porcupine.Operation{
			unknown(0, 1, "k1", "a"),
			fetch(1, 5, 6, 0, 10, 0),
			fetch(1, 7, 8, 0, 10, 1, "a"),
			prod(2, 9, 10, "k2", ids("b"), 1),
		}},
		{name: "open-ended produce never applied", ok: true, ops: []porcupine.Operation{
			unknown(0, 1, "k1", "a"),
			prod(2, 3, 4, "k2", ids("b"), 0),
			fetch(1, 5, 6, 0, 10, 1, "b"),
		}},
		{name: "open-ended produce retried: duplicate gives the first offsets", ok: true, ops: []porcupine.Operation{
			unknown(0, 1, "k1", "a", "b"),
			prod(1, 2, 3, "k2", ids("c"), 2),
			dup(0, 4, 5, "k1", ids("a", "b"), 0, 1),
			fetch(1, 6, 7, 0, 10, 3, "a", "b", "c"),
		}},
		{name: "open-ended produce retried: the retry appends, the first stays a no-op", ok: true, ops: []porcupine.Operation{
			unknown(0, 1, "k1", "a"),
			prod(0, 2, 3, "k1", ids("a"), 0),
			dup(0, 4, 5, "k1", ids("a"), 0),
			fetch(1, 6, 7, 0, 10, 1, "a"),
		}},
		{name: "keyless produces are never duplicates", ok: true, ops: []porcupine.Operation{
			prod(0, 1, 2, "", ids("a"), 0),
			prod(0, 3, 4, "", ids("b"), 1),
		}},

		{name: "fetch sees a message before its produce was invoked", ok: false, ops: []porcupine.Operation{
			fetch(1, 1, 2, 0, 10, 1, "a"),
			prod(0, 3, 4, "k1", ids("a"), 0),
		}},
		{name: "an offset given twice", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a"), 0),
			prod(1, 1, 2, "k2", ids("b"), 0),
		}},
		{name: "a message disappears after being read", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a"), 0),
			fetch(1, 3, 4, 0, 10, 1, "a"),
			fetch(1, 5, 6, 0, 10, 0),
		}},
		{name: "an open-ended produce read, then gone", ok: false, ops: []porcupine.Operation{
			unknown(0, 1, "k1", "a"),
			fetch(1, 3, 4, 0, 10, 1, "a"),
			oor(1, 5, 6, 1, 0),
		}},
		{name: "a message moves after being read", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a"), 0),
			prod(0, 3, 4, "k2", ids("b"), 1),
			fetch(1, 5, 6, 0, 10, 2, "a", "b"),
			fetch(1, 7, 8, 0, 10, 2, "b", "a"),
		}},
		{name: "a gap in acknowledged offsets", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a"), 0),
			prod(0, 3, 4, "k2", ids("b"), 2),
		}},
		{name: "a gap filled by a produce that was never invoked", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a"), 1),
			unknown(1, 3, "k2", "b"), // called after the first returned: cannot sit before it
		}},
		{name: "a request's messages not contiguous", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 5, "k1", ids("a", "b"), 0, 2),
			prod(1, 1, 5, "k2", ids("c"), 1),
		}},
		{name: "a duplicate with other offsets", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a"), 0),
			prod(0, 3, 4, "k2", ids("b"), 1),
			dup(0, 5, 6, "k1", ids("a"), 1),
		}},
		{name: "a retry appended twice", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a"), 0),
			prod(0, 3, 4, "k1", ids("a"), 1),
		}},
		{name: "a duplicate for a key never stored", ok: false, ops: []porcupine.Operation{
			dup(0, 1, 2, "k1", ids("a"), 0),
		}},
		{name: "a fetch below the end returns nothing", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a"), 0),
			fetch(1, 3, 4, 0, 10, 1),
		}},
		{name: "a stale end offset", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a", "b"), 0, 1),
			fetch(1, 3, 4, 0, 1, 1, "a"),
		}},
		{name: "more messages than asked", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a", "b"), 0, 1),
			fetch(1, 3, 4, 0, 1, 2, "a", "b"),
		}},
		{name: "416 for an offset below the end", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 2, "k1", ids("a"), 0),
			oor(1, 3, 4, 1, 1), // offset 1 == end: an empty answer, not 416
		}},
		{name: "reads go backwards in time", ok: false, ops: []porcupine.Operation{
			prod(0, 1, 10, "k1", ids("a"), 0),
			fetch(1, 2, 3, 0, 10, 1, "a"),
			fetch(2, 4, 5, 0, 10, 0), // after a read saw a, a later read must see it
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Check(0, tc.ops, 5*time.Second)
			want := porcupine.Illegal
			if tc.ok {
				want = porcupine.Ok
			}
			if res.Verdict != want {
				t.Fatalf("verdict %s, want %s\n%s", res.Verdict, want, res.Explain)
			}
			if !tc.ok && !strings.Contains(res.Explain, "could not place") {
				t.Errorf("explanation missing: %q", res.Explain)
			}
		})
	}
}

// TestRecorderConcurrent drives the recorder from many goroutines against an in-memory log that
// is linearizable by construction (one mutex), and checks the recorded history passes; then
// it corrupts one answer and checks the history fails.
func TestRecorderConcurrent(t *testing.T) {
	for _, corrupt := range []bool{false, true} {
		t.Run(fmt.Sprintf("corrupt=%v", corrupt), func(t *testing.T) {
			rec := NewRecorder()
			var mu sync.Mutex
			var log []string
			keys := map[string]int64{}
			var wg sync.WaitGroup
			for c := 0; c < 6; c++ {
				wg.Add(1)
				go func(c int) {
					defer wg.Done()
					for i := 0; i < 60; i++ {
						switch {
						case c%2 == 0:
							key := fmt.Sprintf("c%d-%d", c, i)
							ids := []string{key + "a", key + "b"}
							call := rec.Produce(c, 0, key, ids)
							mu.Lock()
							start := int64(len(log))
							log = append(log, ids...)
							keys[key] = start
							mu.Unlock()
							switch {
							case i%10 == 3:
								call.Unknown() // applied, answer lost
							case corrupt && c == 0 && i == 30:
								call.Produced([]int64{start + 1, start + 2}, false)
							default:
								call.Produced([]int64{start, start + 1}, false)
							}
						default:
							off := int64(i % 7)
							call := rec.Fetch(c, 0, off, 3)
							mu.Lock()
							end := int64(len(log))
							if off > end {
								mu.Unlock()
								call.OutOfRange(end)
								continue
							}
							got := append([]string(nil), log[off:min(end, off+3)]...)
							mu.Unlock()
							call.Fetched(got, end)
						}
					}
				}(c)
			}
			// One call left pending: it counts as unknown and must not break the check.
			rec.Produce(9, 0, "never-sent", []string{"zzz"})
			wg.Wait()
			res := rec.CheckAll(30*time.Second, false)
			if len(res) != 1 {
				t.Fatalf("%d partitions", len(res))
			}
			want := porcupine.Ok
			if corrupt {
				want = porcupine.Illegal
			}
			if res[0].Verdict != want {
				t.Fatalf("verdict %s, want %s (%d ops, %d open)\n%s", res[0].Verdict, want, res[0].Ops, res[0].Open, res[0].Explain)
			}
			if res[0].Open < 6*3 || res[0].Ops < 300 {
				t.Fatalf("history has %d ops, %d open", res[0].Ops, res[0].Open)
			}
			t.Logf("%d ops (%d open) checked in %v: %s", res[0].Ops, res[0].Open, res[0].Took, res[0].Verdict)
		})
	}
}

func TestCallFinishedTwicePanics(t *testing.T) {
	rec := NewRecorder()
	c := rec.Produce(0, 0, "k", []string{"a"})
	c.Produced([]int64{0}, false)
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	c.Produced([]int64{0}, false)
}

// TestStateForkKeepsPrefixes: states share a backing while they agree and fork when they
// differ; no state's contents or keys change under it.
func TestStateForkKeepsPrefixes(t *testing.T) {
	empty := Model.Init().(state)
	a := empty.append("k1", []string{"x", "y"})
	b := empty.append("k1", []string{"x", "y"}) // the same entries: shares a's backing
	if a.b != b.b || !equal(a, b) {
		t.Fatalf("equal appends did not share a backing")
	}
	c := empty.append("k2", []string{"z"}) // differs at 0: forks
	if c.b == a.b || equal(a, c) {
		t.Fatalf("a different append did not fork")
	}
	d := a.append("k3", []string{"w"})
	e := c.append("k3", []string{"w"})
	for _, tc := range []struct {
		s    state
		want string
	}{{a, "x y"}, {c, "z"}, {d, "x y w"}, {e, "z w"}} {
		var got []string
		for i := int64(0); i < tc.s.n; i++ {
			got = append(got, tc.s.b.entries[i].id)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("state holds %v, want %s", got, tc.want)
		}
	}
	if _, ok := c.keyStart("k1"); ok {
		t.Errorf("k1 visible in a state that never stored it")
	}
	if at, ok := e.keyStart("k3"); !ok || at != 1 {
		t.Errorf("k3 at %d %v in e, want 1", at, ok)
	}
	if at, ok := d.keyStart("k3"); !ok || at != 2 {
		t.Errorf("k3 at %d %v in d, want 2", at, ok)
	}
	if _, ok := a.keyStart("k3"); ok {
		t.Errorf("k3 visible in a shorter state of the same backing")
	}
}
