package broker

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// TestRaftTruncationIsSyncedBeforeARoll: a follower discards an uncommitted suffix a new leader
// overwrote, and the new leader's first entry does not fit in the segment: the append rolls to a
// new segment at once. The cut of the old segment must be fsync'd by then; the next sync covers
// only the active (new) segment, and before the fix nothing synced the cut, so a power loss
// could bring the discarded entries back in front of the new ones (found by the simulation,
// whose disk keeps an unsynced truncation's old length).
func TestRaftTruncationIsSyncedBeforeARoll(t *testing.T) {
	dir := t.TempDir()
	b, _ := replRetentionBrokerSegment(t, dir, 4096)
	defer b.Close()
	ctx := context.Background()
	mustCreate(t, b, "a", 1)
	l := b.RaftLog()
	big := make([]byte, 3000)
	if _, err := b.Produce(ctx, "a", []Message{{Value: big}}, ""); err != nil {
		t.Fatal(err)
	}
	bigEntry, err := l.Entries(l.LastIndex(), l.LastIndex()+1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	bigLoc, _ := l.loc(bigEntry[0].Index)
	for b.log.activeBase() <= bigLoc.pos || b.log.end.Load()-b.log.activeBase() < 1200 {
		if _, err := b.Produce(ctx, "a", []Message{{Value: []byte("small message")}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	last := l.LastIndex()
	small, err := l.Entries(last, last+1, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	// An uncommitted suffix of term 1, then the new leader's entry of term 2 over it.
	var suffix []RaftEntry
	for i := uint64(1); i <= 3; i++ {
		suffix = append(suffix, RaftEntry{Index: last + i, Term: 1, Data: small[0].Data})
	}
	if err := l.Append(suffix); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(dir, "log", segmentName(b.log.activeBase()))
	loc, _ := l.loc(last + 1)
	cut := loc.pos - b.log.activeBase()

	var (
		mu     sync.Mutex
		synced []int64 // sizes the old segment was synced at
	)
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if ev.Kind == fsutil.File && strings.HasSuffix(ev.Path, filepath.Base(seg)) {
			mu.Lock()
			synced = append(synced, ev.Size)
			mu.Unlock()
		}
		return do()
	})
	defer restore()
	if err := l.Append([]RaftEntry{{Index: last + 1, Term: 2, Data: bigEntry[0].Data}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	if b.log.activeBase() == loc.pos-cut {
		t.Fatalf("the test's entry did not roll the log to a new segment: base %d, cut at %d, entry of %d bytes", b.log.activeBase(), cut, len(bigEntry[0].Data))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, size := range synced {
		if size == cut {
			return
		}
	}
	t.Fatalf("the segment cut at %d bytes was synced at %v: the cut is not durable", cut, synced)
}
