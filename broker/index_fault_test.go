package broker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Index segments are memory-mapped. A store into a page the file system cannot back (a full
// disk under a sparse file) or a load from a page it cannot read (EIO) is a SIGBUS, which kills
// the process unless it is turned into an error. These tests produce the same fault without a
// broken disk: they shrink the index file under the mapping, so its pages lie past the end of
// the file.

func shrinkIndex(t *testing.T, dir string) {
	t.Helper()
	path := filepath.Join(dir, "index", "t-0", indexName(0))
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
}

func TestIndexFaultOnFetchIsAnError(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.IndexSegmentEntries = 1024
	b := mustOpen(t, o)
	defer b.Close()
	mustCreate(t, b, "t", 1)
	produceN(t, b, 10)
	shrinkIndex(t, dir)
	if _, err := b.Fetch(context.Background(), "t", 0, FetchOptions{Offset: 0}); err == nil {
		t.Fatal("fetch through an unreadable index page succeeded")
	}
}

func TestIndexFaultOnWriteStopsTheBroker(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.IndexSegmentEntries = 1024
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	produceN(t, b, 1)
	shrinkIndex(t, dir)
	res, err := b.Produce(context.Background(), "t", []Message{msg("v1")}, "")
	if err != nil {
		t.Fatalf("the batch is in the log; only its index entry failed: %v", err)
	}
	if res.Offsets[0].Offset != 1 {
		t.Fatalf("offset %+v", res.Offsets)
	}
	if b.Err() == nil {
		t.Fatal("Err is nil after an index store failed")
	}
	b.Close()
	b = mustOpen(t, o)
	defer b.Close()
	wantValues(t, fetchAll(t, b, "t", 0), 2)
}

// TestIndexFaultKeepsRetentionOff: retention reads the newest entry of a partition's first
// index segment to decide whether it expired. When that page cannot be read (EIO, or the fault
// these tests make), the entry is unknown, not zero: taking its timestamp for 0 would expire the
// segment and move the partition's start past messages that are nowhere near their retention age.
func TestIndexFaultKeepsRetentionOff(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.IndexSegmentEntries = 1024
	o.RetentionCheckInterval = time.Hour
	b := mustOpen(t, o)
	defer b.Close()
	if _, err := b.CreateTopic("t", TopicConfig{Partitions: 1, RetentionAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1030; i++ { // two index segments
		if _, err := b.Produce(context.Background(), "t", []Message{msg("v")}, ""); err != nil {
			t.Fatal(err)
		}
	}
	shrinkIndex(t, dir) // the first segment's pages now fault
	b.EnforceRetention()
	if info, _ := b.Topic("t"); info.Partitions[0].StartOffset != 0 {
		t.Fatalf("retention moved the start to %d: an unreadable index page was taken for expired messages", info.Partitions[0].StartOffset)
	}
}
