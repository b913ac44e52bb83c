package offsetdb

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// coalesceReference is Coalesce written the plain way: a map of the winner per
// key (the highest offset; among equal offsets the later one), then sorted.
func coalesceReference(offsets []Offset) []Offset {
	win := map[Key]Offset{}
	for _, o := range offsets {
		if w, ok := win[o.Key()]; !ok || o.Next >= w.Next {
			win[o.Key()] = o
		}
	}
	out := make([]Offset, 0, len(win))
	for _, o := range win {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b Offset) int { return compareKeys(a.Key(), b.Key()) })
	return out
}

// The permutation sort of Coalesce keeps its contract on random batches with
// repeated keys, equal offsets from different committers, and several groups
// and topics (names that are prefixes of each other included).
func TestCoalesceMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "ab", "b", "ba", "z"}
	for round := range 2000 {
		n := r.IntN(70)
		in := make([]Offset, n)
		for i := range in {
			in[i] = Offset{
				Group: names[r.IntN(len(names))], Topic: names[r.IntN(len(names))],
				Partition: r.IntN(6), Next: int64(r.IntN(4)), CommittedBy: fmt.Sprint(i),
			}
		}
		if round%7 == 0 { // already sorted input takes the short path
			in = coalesceReference(in)
		}
		got, err := Coalesce(in)
		if err != nil {
			t.Fatal(err)
		}
		if want := coalesceReference(in); !slices.Equal(got, want) {
			t.Fatalf("round %d: Coalesce(%v)\n = %v\nwant %v", round, in, got, want)
		}
	}
}

// The integer sort of a batch of one group and topic keeps the same contract:
// the highest offset per partition, the later of equal ones, partitions in
// order (large partition numbers included), whatever the input order.
func TestCoalesceOneGroupTopicMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	parts := []int{0, 1, 2, 7, 1<<31 - 1, 1 << 30}
	for round := range 2000 {
		n := 1 + r.IntN(130)
		in := make([]Offset, n)
		for i := range in {
			in[i] = Offset{Group: "g", Topic: "t", Partition: parts[r.IntN(len(parts))],
				Next: int64(r.IntN(4)), CommittedBy: fmt.Sprint(i)}
			if round%3 == 0 {
				in[i].Partition = r.IntN(n) // mostly distinct keys, as under load
			}
		}
		if !sameNames(in) {
			t.Fatal("sameNames: false for one group and topic")
		}
		got, err := Coalesce(in)
		if err != nil {
			t.Fatal(err)
		}
		if want := coalesceReference(in); !slices.Equal(got, want) {
			t.Fatalf("round %d: Coalesce(%v)\n = %v\nwant %v", round, in, got, want)
		}
	}
	// A different topic (or group) in the batch takes the general path.
	if sameNames([]Offset{{Group: "g", Topic: "t"}, {Group: "g", Topic: "u"}}) ||
		sameNames([]Offset{{Group: "g", Topic: "t"}, {Group: "h", Topic: "t"}}) {
		t.Fatal("sameNames: true for different names")
	}
}

func BenchmarkCoalesce32(b *testing.B) { benchmarkCoalesce(b, 32, "t") }

func BenchmarkCoalesce64(b *testing.B) { benchmarkCoalesce(b, 64, "t") }

// BenchmarkCoalesce64TwoTopics is a batch the integer sort does not take.
func BenchmarkCoalesce64TwoTopics(b *testing.B) { benchmarkCoalesce(b, 64, "") }

func benchmarkCoalesce(b *testing.B, n int, topic string) {
	in := make([]Offset, n)
	for i, p := range rand.Perm(n) {
		tp := topic
		if tp == "" {
			tp = fmt.Sprint("t", p%2)
		}
		in[i] = Offset{Group: "g", Topic: tp, Partition: p, Next: int64(i), CommittedBy: "bench"}
	}
	b.ReportAllocs()
	for b.Loop() {
		coalesceValid(in) // what a flush runs: Commit validated each offset
	}
}
