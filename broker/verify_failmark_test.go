package broker

import (
	"testing"
)

// TestVerifyLogHonoursFailMark: after a failed fsync the broker records where the log is known
// durable (the fail mark) and the next start cuts everything after it. `imago log verify` must
// read the log as the start will: damage past the mark is not corruption to report (those bytes
// were never acknowledged and will be cut), and the report says how much the start will cut.
func TestVerifyLogHonoursFailMark(t *testing.T) {
	dir := t.TempDir()
	b := mustOpen(t, testOptions(t, dir))
	mustCreate(t, b, "t", 1)
	ends := produceN(t, b, 10)
	b.abandon()
	m, _, _, err := openFailMark(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.record(ends[3]); err != nil {
		t.Fatal(err)
	}
	m.close()
	// Damage past the mark, followed by valid batches: corruption if the mark were ignored.
	overwrite(t, lastSegment(t, dir), ends[5]+batchHeaderSize+recordHeaderSize, []byte{'X'})

	rep, err := VerifyLog(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Corruption != nil {
		t.Fatalf("verify reports corruption past the fail mark, which the next start cuts: %v", rep.Corruption)
	}
	if rep.Batches != 4 || rep.FailMark != ends[3] || rep.FailMarkCut != ends[9]-ends[3] {
		t.Fatalf("report %+v: want 4 batches, fail mark at %d cutting %d bytes", rep, ends[3], ends[9]-ends[3])
	}
	// And the start agrees: it cuts at the mark and serves the first four messages.
	b = mustOpen(t, testOptions(t, dir))
	defer b.Close()
	if got := fetchAll(t, b, "t", 0); len(got) != 4 {
		t.Fatalf("after the start: %v, want v0..v3", values(got))
	}
}
