package broker

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// TestIndexFailureThenFsyncFailureAcknowledgesNothingItCuts: a group whose batches are written
// but whose index cannot be stored (here the new index segment's directory fsync fails) is
// acknowledged: the batches are in the log and the restart indexes them. With fsync interval
// or never they are not fsync'd yet, and the broker's last fsync before it stops (fail) can
// fail too; the restart then cuts the log at its durable end, below them. They must be answered
// with the failure then, not acknowledged and lost. Both failed syncs are injected
// (fault_test.go): a real disk cannot be made to fail chosen syncs.
func TestIndexFailureThenFsyncFailureAcknowledgesNothingItCuts(t *testing.T) {
	eachLazyFsync(t, func(t *testing.T, dir string, o Options) {
		o.IndexSegmentEntries = 2
		b := mustOpen(t, o)
		defer b.abandon()
		mustCreate(t, b, "t", 1)
		ctx := context.Background()
		for i := 0; i < 2; i++ { // the first index segment, full
			if _, err := b.Produce(ctx, "t", []Message{msg("v")}, ""); err != nil {
				t.Fatal(err)
			}
		}
		// Offset 2 needs a new index segment, whose directory fsync fails; then so does the
		// log's fsync.
		indexDir := dirSyncUnder(filepath.Join(dir, "index"))
		logFile := fileSyncUnder(filepath.Join(dir, "log"))
		f := injectSyncFaults(t, func(ev fsutil.Event) bool { return indexDir(ev) || logFile(ev) })
		res, err := b.Produce(ctx, "t", []Message{msg("pay-1")}, "k1")
		if f.count() < 2 {
			t.Fatalf("%d syncs failed, want the index directory's and the log's: the scene did not happen", f.count())
		}
		t.Logf("k1: %+v %v", res, err)
		f.set(nil)
		b.abandon()
		b = mustOpen(t, o)
		var stored bool
		for _, m := range fetchAll(t, b, "t", 0) {
			stored = stored || string(m.Value) == "pay-1"
		}
		if err == nil && !stored {
			t.Fatalf("k1 was acknowledged (%+v) after the index and the log fsync failed, and the restart cut it: an acknowledged message lost", res)
		}
		if err != nil && !errors.Is(err, ErrStorage) {
			t.Fatalf("k1: %v, want the storage failure", err)
		}
	})
}
