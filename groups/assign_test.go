package groups

import (
	"fmt"
	"reflect"
	"testing"
)

func parts(spec ...any) []Partition {
	var out []Partition
	for i := 0; i < len(spec); i += 2 {
		out = append(out, Partition{spec[i].(string), spec[i+1].(int)})
	}
	return out
}

func TestAssign(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []string
		parts   []Partition
		want    map[string][]Partition
	}{
		{"no members", nil, parts("t", 0), map[string][]Partition{}},
		{"no partitions", []string{"a", "b"}, nil, map[string][]Partition{}},
		{"one member takes all", []string{"a"}, parts("t", 1, "t", 0),
			map[string][]Partition{"a": parts("t", 0, "t", 1)}},
		{"round robin over sorted members", []string{"c", "a", "b"}, parts("t", 0, "t", 1, "t", 2, "t", 3),
			map[string][]Partition{"a": parts("t", 0, "t", 3), "b": parts("t", 1), "c": parts("t", 2)}},
		{"partitions sorted by topic then partition", []string{"b", "a"}, parts("y", 0, "x", 10, "x", 2),
			map[string][]Partition{"a": parts("x", 2, "y", 0), "b": parts("x", 10)}},
		{"more members than partitions", []string{"a", "b", "c"}, parts("t", 0),
			map[string][]Partition{"a": parts("t", 0)}},
		{"duplicates counted once", []string{"a", "a", "b"}, parts("t", 0, "t", 0, "t", 1),
			map[string][]Partition{"a": parts("t", 0), "b": parts("t", 1)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]Partition(nil), tc.parts...)
			got := Assign(tc.members, tc.parts)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Assign(%v, %v) = %v, want %v", tc.members, tc.parts, got, tc.want)
			}
			if !reflect.DeepEqual(in, tc.parts) {
				t.Fatalf("Assign modified its partitions: %v, was %v", tc.parts, in)
			}
		})
	}
}

// TestAssignProperties checks, for many sizes, that every partition has exactly one owner,
// counts differ by at most one, and the deal does not depend on the input order.
func TestAssignProperties(t *testing.T) {
	for nm := 1; nm <= 7; nm++ {
		for np := 0; np <= 20; np++ {
			var ms []string
			for i := range nm {
				ms = append(ms, fmt.Sprintf("m-%02d", i))
			}
			var ps []Partition
			for i := range np {
				ps = append(ps, Partition{fmt.Sprintf("t%d", i%3), i})
			}
			got := Assign(ms, ps)
			rev := make([]string, len(ms))
			for i := range ms {
				rev[i] = ms[len(ms)-1-i]
			}
			revP := make([]Partition, len(ps))
			for i := range ps {
				revP[i] = ps[len(ps)-1-i]
			}
			if again := Assign(rev, revP); !reflect.DeepEqual(got, again) {
				t.Fatalf("%d members, %d partitions: the deal depends on input order: %v vs %v", nm, np, got, again)
			}
			owner := map[Partition]string{}
			lo, hi := np, 0
			for _, m := range ms {
				n := len(got[m])
				lo, hi = min(lo, n), max(hi, n)
				for _, p := range got[m] {
					if o, dup := owner[p]; dup {
						t.Fatalf("partition %v owned by %s and %s", p, o, m)
					}
					owner[p] = m
				}
			}
			if len(owner) != np || hi-lo > 1 {
				t.Fatalf("%d members, %d partitions: %d owned, counts %d..%d", nm, np, len(owner), lo, hi)
			}
		}
	}
}
