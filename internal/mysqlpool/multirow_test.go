package mysqlpool

import (
	"strings"
	"testing"
)

func TestMultiRow(t *testing.T) {
	m := NewMultiRow("INSERT INTO t VALUES ", "(?,?)", " ON DUPLICATE KEY UPDATE v = VALUES(v)", 1000)
	if m.MaxRows() != 512 {
		t.Fatalf("MaxRows %d, want 512 (1000 rounded down to a power of two)", m.MaxRows())
	}
	for n, want := range map[int]int{1: 1, 2: 2, 3: 4, 4: 4, 5: 8, 33: 64, 512: 512} {
		if got := m.RowsFor(n); got != want {
			t.Errorf("RowsFor(%d) = %d, want %d", n, got, want)
		}
	}
	if got := m.Text(1); got != "INSERT INTO t VALUES (?,?) ON DUPLICATE KEY UPDATE v = VALUES(v)" {
		t.Errorf("Text(1) = %q", got)
	}
	if got := strings.Count(m.Text(64), "(?,?)"); got != 64 {
		t.Errorf("Text(64) has %d rows", got)
	}
	if got := strings.Count(m.Text(512), "?"); got != 1024 {
		t.Errorf("Text(512) has %d placeholders", got)
	}
}
