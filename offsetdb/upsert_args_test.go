package offsetdb

import (
	"reflect"
	"testing"
)

// Reused arguments hold exactly what a fresh construction holds, batch after
// batch (a shorter batch after a longer one leaves nothing of it behind).
func TestUpsertArgsReuse(t *testing.T) {
	batches := [][]Offset{
		{{Group: "g", Topic: "t", Partition: 1, Next: 5, CommittedBy: "a"}, {Group: "g", Topic: "t", Partition: 300, Next: 1 << 40, CommittedBy: "b"},
			{Group: "h", Topic: "t", Partition: 2, Next: 7, CommittedBy: "b"}},
		{{Group: "x", Topic: "y", Partition: 0, Next: 0, CommittedBy: ""}},
	}
	a := getUpsertArgs()
	defer a.release()
	for _, rows := range batches {
		for _, size := range []int{len(rows), 4} {
			var want []any
			for i := range size {
				o := rows[min(i, len(rows)-1)]
				want = append(want, o.Group, o.Topic, o.Partition, o.Next, o.CommittedBy)
			}
			if got := a.mysql(rows, size); !reflect.DeepEqual(got, want) {
				t.Fatalf("mysql(%v, %d) = %v, want %v", rows, size, got, want)
			}
		}
		var g, tp, b []string
		var p []int32
		var n []int64
		for _, o := range rows {
			g, tp, b = append(g, o.Group), append(tp, o.Topic), append(b, o.CommittedBy)
			p, n = append(p, int32(o.Partition)), append(n, o.Next)
		}
		if got, want := a.pg(rows), []any{g, tp, p, n, b}; !reflect.DeepEqual(got, want) {
			t.Fatalf("pg(%v) = %v, want %v", rows, got, want)
		}
	}
}
