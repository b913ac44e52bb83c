package broker

import (
	"context"
	"testing"
)

// TestDropCorruptBatchNeverReusesOffsets: the dropped batch held the last messages of a
// partition (later batches belong to other partitions). Their offsets were acknowledged, and
// the checkpoint on disk says the partition ends after them; the rebuild after the drop must not
// hand those offsets to new messages: a consumer that read them has committed past them, and a
// retry of the dropped request's Idempotency-Key (remembered through the checkpoint) would be
// answered "duplicate" pointing at somebody else's message.
func TestDropCorruptBatchNeverReusesOffsets(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b := mustOpen(t, testOptions(t, dir))
	mustCreate(t, b, "t", 2)
	var ends []int64
	for _, m := range []struct {
		v    string
		part int
		key  string
	}{{"a", 0, ""}, {"b", 0, "kb"}, {"c", 1, ""}} {
		res, err := b.Produce(ctx, "t", []Message{{Value: []byte(m.v), Partition: m.part}}, m.key)
		if err != nil {
			t.Fatal(err)
		}
		if m.v == "b" && res.Offsets[0].Offset != 1 {
			t.Fatalf("b at %+v", res.Offsets[0])
		}
		ends = append(ends, b.log.end.Load())
	}
	b.Close() // the checkpoint covers all three
	seg := lastSegment(t, dir)
	overwrite(t, seg, ends[0]+batchHeaderSize+recordHeaderSize, []byte{'X'}) // b's value
	if _, err := DropCorruptBatch(dir, ends[0], nil); err != nil {
		t.Fatal(err)
	}

	b = mustOpen(t, testOptions(t, dir))
	defer b.Close()
	if end := endOf(b, "t", 0); end != 2 {
		t.Errorf("partition 0 ends at %d after the drop, want 2 (offset 1 was acknowledged)", end)
	}
	res, err := b.Produce(ctx, "t", []Message{msg("d")}, "")
	if err != nil {
		t.Fatal(err)
	}
	if res.Offsets[0].Offset != 2 {
		t.Fatalf("a new message got offset %d, which the dropped batch's message was acknowledged at", res.Offsets[0].Offset)
	}
	got := fetchAll(t, b, "t", 0)
	if len(got) != 2 || string(got[0].Value) != "a" || string(got[1].Value) != "d" || got[1].Offset != 2 {
		t.Fatalf("partition 0 holds %v", values(got))
	}
}

// TestGapAtPartitionEndNoRebuildEachStart: once the rebuild after a drop has written a
// checkpoint, the next starts load the index from it. A partition whose last checkpointed offset
// is a lost one (a gap entry) must not make every start rebuild every index from the whole log.
func TestGapAtPartitionEndNoRebuildEachStart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b := mustOpen(t, testOptions(t, dir))
	mustCreate(t, b, "t", 2)
	var ends []int64
	for _, m := range []struct {
		v    string
		part int
	}{{"a", 0}, {"b", 0}, {"c", 1}} {
		if _, err := b.Produce(ctx, "t", []Message{{Value: []byte(m.v), Partition: m.part}}, ""); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, b.log.end.Load())
	}
	b.Close()
	overwrite(t, lastSegment(t, dir), ends[0]+batchHeaderSize+recordHeaderSize, []byte{'X'})
	if _, err := DropCorruptBatch(dir, ends[0], nil); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, testOptions(t, dir)) // rebuilds (the drop removed the index), checkpoints
	b.Close()
	for i := 0; i < 2; i++ {
		b = mustOpen(t, testOptions(t, dir))
		replayed := b.stats.recovered
		b.Close()
		if replayed != 0 {
			t.Fatalf("start %d after the rebuild replayed %d bytes: the checkpoint at the end of the log was not used", i+1, replayed)
		}
	}
}
