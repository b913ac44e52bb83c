package mysqlpool

import (
	"math/bits"
	"strings"
	"sync"
)

// MultiRow is a multi-row statement ("INSERT ... VALUES (?,?),(?,?) ON DUPLICATE KEY ...")
// whose row count is always a power of two, so that a pool keeping prepared statements
// reuses a handful of texts whatever the batch sizes. The caller fills the rows past its own
// with a repeat of its last row (RowsFor says how many), which must be harmless for the
// statement (an upsert writing the same values again, an IN list naming a key twice).
type MultiRow struct {
	maxRows int
	texts   []func() string
}

// NewMultiRow returns the statement head, then maxRows or fewer copies of row separated by
// commas, then tail. maxRows is rounded down to a power of two.
func NewMultiRow(head, row, tail string, maxRows int) *MultiRow {
	n := bits.Len(uint(max(1, maxRows))) // texts for 2^0 .. 2^(n-1) rows
	m := &MultiRow{maxRows: 1 << (n - 1), texts: make([]func() string, n)}
	for i := range m.texts {
		m.texts[i] = sync.OnceValue(func() string {
			var q strings.Builder
			q.WriteString(head)
			for r := range 1 << i {
				if r > 0 {
					q.WriteByte(',')
				}
				q.WriteString(row)
			}
			q.WriteString(tail)
			return q.String()
		})
	}
	return m
}

// MaxRows is the most rows one statement takes.
func (m *MultiRow) MaxRows() int { return m.maxRows }

// RowsFor is the row count of the statement that carries n rows (1 <= n <= MaxRows): the
// smallest power of two not below n.
func (m *MultiRow) RowsFor(n int) int {
	if n <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(n-1))
}

// Text is the statement for rows rows, a value RowsFor returned.
func (m *MultiRow) Text(rows int) string {
	return m.texts[bits.TrailingZeros(uint(rows))]()
}
