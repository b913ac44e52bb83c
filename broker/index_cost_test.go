package broker

import "testing"

// TestIndexAccessDoesNotAllocate: every index load and store goes through the fault guard, and a
// fetch loads one entry per message (thousands per call); the guard must cost no allocation
// (a closure per entry showed up as ~1,800 allocations per 1 MiB fetch).
func TestIndexAccessDoesNotAllocate(t *testing.T) {
	dir := t.TempDir()
	s, err := openIndexSegment(dir, 0, 1024, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	e := indexEntry{Pos: 1, Size: 50, CRC: 7, Timestamp: 9}
	if n := testing.AllocsPerRun(100, func() {
		if err := s.store(3, e); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("store: %v allocations", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		if got, err := s.load(3); err != nil || got != e {
			t.Fatal(got, err)
		}
	}); n != 0 {
		t.Errorf("load: %v allocations", n)
	}
}
