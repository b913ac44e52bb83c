package broker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
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
