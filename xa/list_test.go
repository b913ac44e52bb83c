package xa

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// listCoordinator is a coordinator holding only its table: n transactions created a second
// apart (t0 + i s, gtrid g%04d), every third committed, every fifth rolled back, the rest
// in doubt, those with i%7 == 0 resolved by an operator. Inserted in a shuffled order.
func listCoordinator(n int) (*Coordinator, time.Time) {
	c := &Coordinator{txs: map[string]*txState{}, byID: map[string]*txState{}}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, i := range rand.Perm(n) {
		st := &txState{id: fmt.Sprintf("tx-%04d", i), gtrid: fmt.Sprintf("g%04d", i), created: t0.Add(time.Duration(i) * time.Second)}
		switch {
		case i%3 == 0:
			st.status = StatusCommitted
		case i%5 == 0:
			st.status = StatusRolledBack
		default:
			st.status = StatusInDoubt
		}
		if i%7 == 0 {
			st.by = "dba"
		}
		c.txs[st.gtrid], c.byID[st.id] = st, st
	}
	return c, t0
}

// TestQuery: counts are over every retained transaction whatever the filters and the limit;
// the limit keeps the oldest or the newest as asked; Matched says how many there were.
func TestQuery(t *testing.T) {
	const n = 100
	c, _ := listCoordinator(n)
	want := map[Status]int{}
	var all, inDoubt, resolved, notResolved []int // indexes, oldest first
	for i := range n {
		st := c.txs[fmt.Sprintf("g%04d", i)]
		want[st.status]++
		all = append(all, i)
		if st.status == StatusInDoubt {
			inDoubt = append(inDoubt, i)
		}
		if st.by != "" {
			resolved = append(resolved, i)
		} else {
			notResolved = append(notResolved, i)
		}
	}
	yes, no := true, false
	first := func(ix []int, k int) []int { return ix[:min(k, len(ix))] }
	last := func(ix []int, k int) []int {
		var out []int
		for j := len(ix) - 1; j >= 0 && len(out) < k; j-- {
			out = append(out, ix[j])
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		q       ListQuery
		want    []int
		matched int
	}{
		{"all", ListQuery{}, all, n},
		{"oldest 10", ListQuery{Limit: 10}, first(all, 10), n},
		{"newest 10", ListQuery{Limit: 10, Newest: true}, last(all, 10), n},
		{"newest, no limit", ListQuery{Newest: true}, last(all, n), n},
		{"newest 1", ListQuery{Limit: 1, Newest: true}, []int{n - 1}, n},
		{"in doubt, newest 3", ListQuery{Status: StatusInDoubt, Limit: 3, Newest: true}, last(inDoubt, 3), len(inDoubt)},
		{"in doubt, oldest 3", ListQuery{Status: StatusInDoubt, Limit: 3}, first(inDoubt, 3), len(inDoubt)},
		{"resolved, newest 4", ListQuery{Resolved: &yes, Limit: 4, Newest: true}, last(resolved, 4), len(resolved)},
		{"not resolved, oldest 4", ListQuery{Resolved: &no, Limit: 4}, first(notResolved, 4), len(notResolved)},
		{"limit above the count", ListQuery{Resolved: &yes, Limit: 1000}, resolved, len(resolved)},
		{"no such status", ListQuery{Status: StatusPreparing, Limit: 5}, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := c.Query(tc.q)
			var got []int
			for _, in := range res.Transactions {
				var i int
				fmt.Sscanf(in.ID, "tx-%d", &i)
				got = append(got, i)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("transactions %v, want %v", got, tc.want)
			}
			if res.Matched != tc.matched {
				t.Errorf("matched %d, want %d", res.Matched, tc.matched)
			}
			if fmt.Sprint(res.Counts) != fmt.Sprint(want) {
				t.Errorf("counts %v, want %v (every retained transaction)", res.Counts, want)
			}
		})
	}
	if l := c.List(StatusInDoubt, 2); len(l) != 2 || l[0].ID != fmt.Sprintf("tx-%04d", inDoubt[0]) || l[1].ID != fmt.Sprintf("tx-%04d", inDoubt[1]) {
		t.Errorf("List keeps the oldest first: %+v", l)
	}
}

// TestFirstN: the bounded selection agrees with a full sort, ties on the creation time
// broken by gtrid, for every n.
func TestFirstN(t *testing.T) {
	t0 := time.Now()
	for round := range 50 {
		size := rand.IntN(40)
		var sts []*txState
		for i := range size {
			sts = append(sts, &txState{gtrid: fmt.Sprintf("g%03d", i), created: t0.Add(time.Duration(rand.IntN(5)) * time.Millisecond)})
		}
		for _, newest := range []bool{false, true} {
			before := createdBefore
			if newest {
				before = func(a, b *txState) bool { return createdBefore(b, a) }
			}
			sorted := append([]*txState(nil), sts...)
			sort.Slice(sorted, func(i, j int) bool { return before(sorted[i], sorted[j]) })
			for n := 0; n <= size+1; n++ {
				in := append([]*txState(nil), sts...)
				rand.Shuffle(len(in), func(i, j int) { in[i], in[j] = in[j], in[i] })
				f := firstN{n: n, before: before}
				for _, st := range in {
					f.add(st)
				}
				got := f.sorted()
				want := sorted
				if n > 0 && n < size {
					want = sorted[:n]
				}
				if len(got) != len(want) {
					t.Fatalf("round %d, n %d: %d kept, want %d", round, n, len(got), len(want))
				}
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("round %d, n %d, newest %v: position %d is %s, want %s", round, n, newest, i, got[i].gtrid, want[i].gtrid)
					}
				}
			}
		}
	}
}

// BenchmarkQueryNewest15: the console's "most recent" call over 36,000 retained transactions
// (10 a second for an hour).
func BenchmarkQueryNewest15(b *testing.B) {
	c, _ := listCoordinator(36000)
	for b.Loop() {
		c.Query(ListQuery{Limit: 15, Newest: true})
	}
}

// BenchmarkQueryOldest10000: what the console asked for before (the oldest 10,000 of 36,000).
func BenchmarkQueryOldest10000(b *testing.B) {
	c, _ := listCoordinator(36000)
	for b.Loop() {
		c.Query(ListQuery{Limit: 10000})
	}
}
