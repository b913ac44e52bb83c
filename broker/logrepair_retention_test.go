package broker

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// TestRetentionPastDroppedOffsets: when retention moves a partition's start onto an offset lost
// to a dropped corrupt batch (a gap entry, which points at no log position), the log segments
// before the partition's first real message must still be deleted; a gap must not pin the whole
// log (retention would then never free the disk again).
func TestRetentionPastDroppedOffsets(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.SegmentBytes = 200 // a snapshot and one or two batches per segment
	o.IndexSegmentEntries = 2
	o.RetentionCheckInterval = time.Hour
	o.CheckpointInterval = time.Hour
	b := mustOpen(t, o)
	rs := int64(recordSize(&Message{Value: []byte("v0")}))
	// Five records stay (v2 is lost): retention removes the index segment of v0, v1 and stops
	// at the one starting with the lost v2, since without it only v4, v5 would be left.
	if _, err := b.CreateTopic("t", TopicConfig{Partitions: 1, RetentionBytes: 5 * rs / 2}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if _, err := b.Produce(context.Background(), "t", []Message{msg(fmt.Sprintf("v%d", i))}, ""); err != nil {
			t.Fatal(err)
		}
	}
	p := b.table.Load().byName["t"].parts[0]
	p.mu.RLock()
	e1, _ := p.entry(1)
	e2, _ := p.entry(2)
	e3, _ := p.entry(3)
	p.mu.RUnlock()
	b.Close()
	pos := e2.Pos - batchHeaderSize // v2's batch: the first offset of the second index segment
	names, _ := filepath.Glob(filepath.Join(dir, "log", "*.log"))
	sort.Strings(names)
	seg, base := "", int64(0)
	for _, n := range names {
		var nb int64
		fmt.Sscanf(filepath.Base(n), "%d.log", &nb)
		if nb <= pos {
			seg, base = n, nb
		}
	}
	overwrite(t, seg, pos-base+batchHeaderSize+recordHeaderSize, []byte{'X'})
	if _, err := DropCorruptBatch(dir, pos, nil); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, o)
	defer b.Close()
	b.EnforceRetention()
	info, _ := b.Topic("t")
	if got := info.Partitions[0].StartOffset; got != 2 {
		t.Fatalf("start offset %d after retention, want 2", got)
	}
	if start := b.log.start(); start <= e1.Pos {
		t.Fatalf("the log still starts at %d: the segment of v1 (%d) holds nothing retained, the first is v3 at %d", start, e1.Pos, e3.Pos)
	}
}

// TestRetentionAgeIgnoresDroppedOffsets: an offset lost to a dropped corrupt batch has no
// timestamp (its gap entry reads as 0). When it is the last offset of an index segment, retention
// by age must judge the segment by its newest real message, not expire it as if it were 1970.
func TestRetentionAgeIgnoresDroppedOffsets(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.IndexSegmentEntries = 4
	o.RetentionCheckInterval = time.Hour
	b := mustOpen(t, o)
	if _, err := b.CreateTopic("t", TopicConfig{Partitions: 1, RetentionAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	produceN(t, b, 6) // v3 is the last offset of the first index segment
	p := b.table.Load().byName["t"].parts[0]
	p.mu.RLock()
	e3, _ := p.entry(3)
	p.mu.RUnlock()
	b.Close()
	pos := e3.Pos - batchHeaderSize
	overwrite(t, lastSegment(t, dir), pos+batchHeaderSize+recordHeaderSize, []byte{'X'})
	if _, err := DropCorruptBatch(dir, pos, nil); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, o)
	defer b.Close()
	b.EnforceRetention()
	if info, _ := b.Topic("t"); info.Partitions[0].StartOffset != 0 {
		t.Fatalf("retention moved the start to %d: v0..v2, a moment old, were expired because the segment's last offset was lost", info.Partitions[0].StartOffset)
	}
}
