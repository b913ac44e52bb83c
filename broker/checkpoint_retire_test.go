package broker

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// A checkpoint collects dirty index segments under stateMu and fsyncs them later; retention
// may let one go in between. The checkpoint records the partition's start as it was when it
// collected, inside that segment, so it must sync the segment anyway: a power loss before the
// next checkpoint (which deletes the file) would otherwise serve offsets from the recorded
// start as corrupt.
func TestCheckpointSyncsRetiredSegment(t *testing.T) {
	for attempt := 0; attempt < 12; attempt++ {
		if lost := retireRace(t, attempt); lost != "" {
			t.Fatalf("attempt %d: %s", attempt, lost)
		}
	}
}

func retireRace(t *testing.T, attempt int) string {
	h := newPowerLoss(t)
	dir := t.TempDir()
	o := manualOptions(t, dir)
	o.IndexSegmentEntries = 16
	ctx := context.Background()
	a := mustOpen(t, o)
	if _, err := a.CreateTopic("a", TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateTopic("b", TopicConfig{Partitions: 1, RetentionBytes: 2000}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Produce(ctx, "a", []Message{msg("a0")}, ""); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 64; i++ {
		if _, err := a.Produce(ctx, "b", []Message{msg(fmt.Sprintf("b%d", i))}, ""); err != nil {
			t.Fatal(err)
		}
	}
	aIdx := filepath.Join(dir, "index", "a-0") + string(filepath.Separator)
	var bSynced []string
	var mu sync.Mutex
	held, release := h.holdNext(func(ev fsutil.Event) bool {
		if strings.Contains(ev.Path, filepath.Join("index", "b-0")) {
			mu.Lock()
			bSynced = append(bSynced, filepath.Base(ev.Path))
			mu.Unlock()
		}
		return ev.Kind == fsutil.File && strings.HasPrefix(ev.Path, aIdx)
	})
	ckA := make(chan error, 1)
	go func() { ckA <- a.checkpoint() }()
	<-held // checkpoint A: dirty list taken, syncing a's index
	mu.Lock()
	orderOK := len(bSynced) == 0 // b's segments come after a's in the dirty list
	mu.Unlock()
	ret := make(chan struct{})
	go func() { a.EnforceRetention(); close(ret) }()
	waitFor(t, "retention to move b's start", func() bool {
		return a.table.Load().byName["b"].parts[0].start.Load() > 0
	})
	ckSync := checkpointSync(dir)
	seen := 0
	heldB, releaseB := h.holdNext(func(ev fsutil.Event) bool {
		if !ckSync(ev) {
			return false
		}
		seen++
		return seen == 2 // A's checkpoint file passes; retention's is held
	})
	release(nil)
	if err := <-ckA; err != nil {
		t.Fatal(err)
	}
	<-heldB
	kill(a)
	h.drop(dir)
	defer func() { releaseB(syscall.EIO); <-ret; a.abandon() }()
	if !orderOK {
		return ""
	}
	cp, err := loadCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	var start int64 = -1
	for _, p := range cp.Partitions {
		if p.Topic == a.table.Load().byName["b"].id {
			start = p.Start
		}
	}
	b := mustOpen(t, o)
	defer b.Close()
	if _, err := b.Fetch(ctx, "b", 0, FetchOptions{Offset: start, MaxMessages: 1}); err != nil {
		return fmt.Sprintf("checkpoint start %d of b: fetch after power loss: %v", start, err)
	}
	return ""
}
