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

func BenchmarkCoalesce32(b *testing.B) {
	in := make([]Offset, 32)
	for i, p := range rand.Perm(32) {
		in[i] = Offset{Group: "g", Topic: "t", Partition: p, Next: int64(i), CommittedBy: "bench"}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Coalesce(in); err != nil {
			b.Fatal(err)
		}
	}
}
