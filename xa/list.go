package xa

import "sort"

// ListQuery selects the transactions Query returns.
type ListQuery struct {
	// Status keeps the transactions in that status ("" for any).
	Status Status
	// Resolved, when not nil, keeps those an operator resolved (true: with a ResolvedBy) or
	// those none did (false).
	Resolved *bool
	// Newest orders the newest first (by creation); the default is the oldest first.
	Newest bool
	// Limit keeps the first Limit in that order (0 or less: all of them).
	Limit int
}

// ListResult is Query's answer.
type ListResult struct {
	// Transactions are the first Limit of the matching transactions, in the order asked for.
	Transactions []TxInfo
	// Matched is how many transactions match Status and Resolved, Limit aside: the list was
	// cut when it is more than len(Transactions).
	Matched int
	// Counts has every retained transaction by status, whatever the query selects (a status
	// no transaction has is absent).
	Counts map[Status]int
}

// List returns up to limit transactions with the given status ("" for any), oldest first.
func (c *Coordinator) List(status Status, limit int) []TxInfo {
	return c.Query(ListQuery{Status: status, Limit: limit}).Transactions
}

// Query returns the transactions q selects, with how many matched and the count of every
// retained transaction by status. Under the lock it counts (one pass, nothing built per
// transaction), keeps the first Limit of the matching ones (a bounded heap: the newest 15 of
// tens of thousands cost a pass, not a sort) and builds the information of those only.
func (c *Coordinator) Query(q ListQuery) ListResult {
	before := createdBefore
	if q.Newest {
		before = func(a, b *txState) bool { return createdBefore(b, a) }
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	res := ListResult{Counts: make(map[Status]int, 8)}
	first := firstN{n: q.Limit, before: before}
	for _, st := range c.txs {
		res.Counts[st.status]++
		if (q.Status == "" || st.status == q.Status) && (q.Resolved == nil || (st.by != "") == *q.Resolved) {
			res.Matched++
			first.add(st)
		}
	}
	sts := first.sorted()
	res.Transactions = make([]TxInfo, len(sts))
	for i, st := range sts {
		res.Transactions[i] = st.info()
	}
	return res
}

// createdBefore orders transactions by creation, then gtrid (unique): a total order.
func createdBefore(a, b *txState) bool {
	if !a.created.Equal(b.created) {
		return a.created.Before(b.created)
	}
	return a.gtrid < b.gtrid
}

// firstN keeps the first n of the transactions added, in the order before (all of them when
// n <= 0). Once it holds n, they are a heap whose root is the one that comes last, so each
// further transaction costs one comparison unless it displaces the root.
type firstN struct {
	n      int
	before func(a, b *txState) bool
	h      []*txState
	heap   bool // h is a heap (it holds n)
}

func (f *firstN) add(st *txState) {
	switch {
	case f.n <= 0 || len(f.h) < f.n:
		f.h = append(f.h, st)
	case !f.heap:
		for i := f.n/2 - 1; i >= 0; i-- {
			f.down(i)
		}
		f.heap = true
		fallthrough
	default:
		if f.before(st, f.h[0]) {
			f.h[0] = st
			f.down(0)
		}
	}
}

// down moves h[i] down the heap to its place.
func (f *firstN) down(i int) {
	h := f.h
	for {
		m := 2*i + 1
		if m >= len(h) {
			return
		}
		if r := m + 1; r < len(h) && f.before(h[m], h[r]) {
			m = r
		}
		if !f.before(h[i], h[m]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// sorted returns what it kept, in the order before.
func (f *firstN) sorted() []*txState {
	sort.Slice(f.h, func(i, j int) bool { return f.before(f.h[i], f.h[j]) })
	return f.h
}
