package offsetdb

import "sync"

// upsertArgs holds the bind arguments of one multi-row upsert, kept between
// flushes (a pool, one per flush in progress) so that a flush does not
// allocate five arrays (PostgreSQL) or a slice of 5 arguments per row (MySQL)
// each time. The driver has encoded the arguments when Exec returns, so they
// can be reused then; release clears the names so the pool holds none.
type upsertArgs struct {
	g, t, b []string
	p       []int32
	n       []int64
	args    []any
}

var upsertArgsPool = sync.Pool{New: func() any { return new(upsertArgs) }}

func getUpsertArgs() *upsertArgs { return upsertArgsPool.Get().(*upsertArgs) }

func (a *upsertArgs) release() {
	clear(a.g)
	clear(a.t)
	clear(a.b)
	clear(a.args)
	a.g, a.t, a.b, a.p, a.n, a.args = a.g[:0], a.t[:0], a.b[:0], a.p[:0], a.n[:0], a.args[:0]
	upsertArgsPool.Put(a)
}

// pg returns the five arrays of pgUpsert for rows.
func (a *upsertArgs) pg(rows []Offset) []any {
	a.g, a.t, a.b, a.p, a.n = a.g[:0], a.t[:0], a.b[:0], a.p[:0], a.n[:0]
	for i := range rows {
		o := &rows[i]
		a.g = append(a.g, o.Group)
		a.t = append(a.t, o.Topic)
		a.p = append(a.p, int32(o.Partition))
		a.n = append(a.n, o.Next)
		a.b = append(a.b, o.CommittedBy)
	}
	a.args = append(a.args[:0], a.g, a.t, a.p, a.n, a.b)
	return a.args
}

// mysql returns the arguments of a statement of size rows for chunk (the
// last row repeated to fill it, see mysqlUpsert). A name equal to the one of
// the row before reuses its boxed value: a batch of one group and topic boxes
// its names once, not once per row.
func (a *upsertArgs) mysql(chunk []Offset, size int) []any {
	args := a.args[:0]
	var g, t, b any
	var gs, ts, bs string
	for i := range size {
		o := &chunk[min(i, len(chunk)-1)]
		if g == nil || o.Group != gs {
			g, gs = o.Group, o.Group
		}
		if t == nil || o.Topic != ts {
			t, ts = o.Topic, o.Topic
		}
		if b == nil || o.CommittedBy != bs {
			b, bs = o.CommittedBy, o.CommittedBy
		}
		args = append(args, g, t, o.Partition, o.Next, b)
	}
	a.args = args
	return args
}
