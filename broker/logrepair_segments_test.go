package broker

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// TestDropCorruptBatchAcrossSegments: bad bytes that run from the end of one segment into the
// next are dropped as one gap per segment: no segment file grows over the next one's range, no
// damaged byte stays in the log, every other message keeps its offset, and the log stays
// readable once retention deletes the first segment.
func TestDropCorruptBatchAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.SegmentBytes = 600
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	produceN(t, b, 20)
	b.Close()
	names, _ := filepath.Glob(filepath.Join(dir, "log", "*.log"))
	sort.Strings(names)
	if len(names) < 3 {
		t.Fatalf("%d segments, want at least 3", len(names))
	}
	sizes := map[string]int64{}
	for _, n := range names {
		st, err := os.Stat(n)
		if err != nil {
			t.Fatal(err)
		}
		sizes[n] = st.Size()
	}
	// Damage the last batch of segment 0 and the first batch of segment 1.
	overwrite(t, names[0], sizes[names[0]]-3, []byte{0xAA})
	overwrite(t, names[1], 20, []byte{0xAA})
	v, err := VerifyLog(dir)
	if err != nil || v.Corruption == nil {
		t.Fatalf("verify: %+v %v", v, err)
	}
	rep, err := DropCorruptBatch(dir, v.Corruption.Position, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(rep.Segments) != fmt.Sprint(names[:2]) {
		t.Fatalf("segments changed: %v, want %v", rep.Segments, names[:2])
	}
	for _, n := range names {
		if st, err := os.Stat(n); err != nil || st.Size() != sizes[n] {
			t.Fatalf("%s: size %v (%v) after the drop, want %d", filepath.Base(n), st.Size(), err, sizes[n])
		}
	}
	v, err = VerifyLog(dir)
	if err != nil || v.Corruption != nil || v.TornBytes != 0 {
		t.Fatalf("verify after the drop: %+v corruption %v %v", v, v.Corruption, err)
	}
	b = mustOpen(t, o)
	got := fetchAll(t, b, "t", 0)
	b.Close()
	lost := 0
	for i, m := range got {
		if want := fmt.Sprintf("v%d", m.Offset); string(m.Value) != want {
			t.Fatalf("message %d is %q at offset %d", i, m.Value, m.Offset)
		}
		if i > 0 && m.Offset != got[i-1].Offset+1 {
			lost += int(m.Offset - got[i-1].Offset - 1)
		}
	}
	// Segment 1 may start with a snapshot batch (no messages): at least the message of the
	// last batch of segment 0 is lost, and every other message is read at its offset.
	if lost < 1 || len(got)+lost != 20 || got[0].Offset != 0 || got[len(got)-1].Offset != 19 {
		t.Fatalf("after the drop: %v, %d offsets lost", values(got), lost)
	}
	// What retention leaves after deleting segment 0: the log starts with segment 1's gap.
	if err := os.Remove(names[0]); err != nil {
		t.Fatal(err)
	}
	if v, err := VerifyLog(dir); err != nil || v.Corruption != nil || v.TornBytes != 0 {
		t.Fatalf("verify without segment 0: %+v corruption %v %v", v, v.Corruption, err)
	}
}
