package xa

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/fsutil"
)

// Compaction renames the new file over the log, then fsyncs the directory. When that fsync
// fails (EIO through the fsync seam: a fault a real disk cannot be made to produce on demand),
// the renamed file is the log from then on: every record acknowledged afterwards must be
// there after a reopen (never written to the old, nameless file). The directory fsync is
// retried; while it keeps failing the log fails, so nothing more is acknowledged.
func TestDecisionLogCompactionDirSyncFails(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failures int64 // directory fsyncs of the log's directory that fail; -1: all
	}{
		{"fails once", 1},
		{"keeps failing", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var failed atomic.Int64
			var armed atomic.Bool // from after the open: only compaction's directory syncs fail
			restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
				if armed.Load() && ev.Kind == fsutil.Dir && ev.Path == dir && (tc.failures < 0 || failed.Load() < tc.failures) {
					failed.Add(1)
					return syscall.EIO
				}
				return do()
			})
			defer restore()
			now := time.Unix(10000, 0)
			l, _, err := openDecisionLog(dir, time.Minute, 4096, func() time.Time { return now }, nil, nil, quietLogger())
			if err != nil {
				t.Fatal(err)
			}
			armed.Store(true)
			acked := map[string]bool{}
			for i := 0; i < 300; i++ {
				r := sampleRecord(i) // committing: every one is kept by compaction
				if err := l.appendSync(context.Background(), r); err == nil {
					acked[r.Gtrid] = true
				}
			}
			l.close()
			restore()
			if failed.Load() == 0 {
				t.Fatal("no compaction ran (no directory fsync failed)")
			}
			if tc.failures > 0 && len(acked) != 300 {
				t.Errorf("%d of 300 appends acknowledged after a directory fsync failed once; the retry should have succeeded", len(acked))
			}
			l, recs, err := openDecisionLog(dir, time.Minute, 4096, func() time.Time { return now }, nil, nil, quietLogger())
			if err != nil {
				t.Fatal(err)
			}
			defer l.close()
			got := byGtrid(recs)
			lost := 0
			for g := range acked {
				if _, ok := got[g]; !ok {
					lost++
				}
			}
			if lost > 0 {
				t.Fatalf("%d of %d acknowledged records are gone after the reopen", lost, len(acked))
			}
		})
	}
}
