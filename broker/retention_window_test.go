package broker

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// checkpointSync matches the fsync of a new checkpoint file of the broker in dir (the
// temporary file WriteFileAtomic renames into place).
func checkpointSync(dir string) func(fsutil.Event) bool {
	prefix := filepath.Join(dir, checkpointFileName+".tmp-")
	return func(ev fsutil.Event) bool {
		return ev.Kind == fsutil.File && strings.HasPrefix(ev.Path, prefix)
	}
}

// TestRetentionCrashBeforeCheckpoint: a retention pass removes old index segments, then writes
// the checkpoint that records the partitions' new start offsets. The process dies (or the
// power goes) while that checkpoint is being synced, so the checkpoint on disk is an older
// one, taken before most of the removed segments were written. The next start must still
// serve every retained message at its own offset and append new ones after them: index
// segments removed ahead of the checkpoint must not leave the re-indexed tail out of order.
func TestRetentionCrashBeforeCheckpoint(t *testing.T) {
	for _, power := range []bool{false, true} {
		t.Run(map[bool]string{false: "kill", true: "powerloss"}[power], func(t *testing.T) {
			h := newPowerLoss(t)
			dir := t.TempDir()
			o := manualOptions(t, dir)
			o.SegmentBytes = 4096
			o.IndexSegmentEntries = 16
			o.RetentionBytes = 2000
			ctx := context.Background()
			a := mustOpen(t, o)
			mustCreate(t, a, "t", 1)
			produceN(t, a, 3)
			if err := a.checkpoint(); err != nil {
				t.Fatal(err)
			}
			const n = 200
			for i := 3; i < n; i++ {
				if _, err := a.Produce(ctx, "t", []Message{msg(fmt.Sprintf("v%d", i))}, ""); err != nil {
					t.Fatal(err)
				}
			}
			held, release := h.holdNext(checkpointSync(dir))
			done := make(chan struct{})
			go func() {
				defer close(done)
				a.EnforceRetention()
			}()
			<-held // index segments removed, the checkpoint naming the new start not yet durable
			kill(a)
			if power {
				h.drop(dir)
			}
			defer func() {
				release(syscall.EIO)
				<-done
				a.abandon()
			}()

			b := mustOpen(t, o)
			defer b.Close()
			got := fetchAll(t, b, "t", 0)
			if len(got) == 0 {
				t.Fatal("no message survives")
			}
			for i, m := range got {
				if want := fmt.Sprintf("v%d", m.Offset); string(m.Value) != want || (i > 0 && m.Offset != got[i-1].Offset+1) {
					t.Fatalf("after the crash, offset %d holds %q (previous offset %d): retained messages moved", m.Offset, m.Value, got[max(i-1, 0)].Offset)
				}
			}
			if last := got[len(got)-1].Offset; last != n-1 {
				t.Fatalf("last retained offset %d, want %d", last, n-1)
			}
			res, err := b.Produce(ctx, "t", []Message{msg(fmt.Sprintf("v%d", n))}, "")
			if err != nil || res.Offsets[0].Offset != n {
				t.Fatalf("produce after the crash: %+v %v, want offset %d", res, err, n)
			}
			got = fetchAll(t, b, "t", 0)
			if last := got[len(got)-1]; last.Offset != n || string(last.Value) != fmt.Sprintf("v%d", n) {
				t.Fatalf("after a produce the partition ends with %d %q", last.Offset, last.Value)
			}
			b.EnforceRetention()
			if err := b.checkpoint(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
