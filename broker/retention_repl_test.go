package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// replRetentionBroker opens a replicated broker in dir with small index segments and a byte
// cap, driven by a loopProposer (term 1, raft indexes after the log's last).
func replRetentionBroker(t *testing.T, dir string) (*Broker, *loopProposer) {
	t.Helper()
	return replRetentionBrokerSegment(t, dir, 0)
}

// replRetentionBrokerSegment is replRetentionBroker with log segments of segmentBytes (0: the
// small default of retentionOptions).
func replRetentionBrokerSegment(t *testing.T, dir string, segmentBytes int64) (*Broker, *loopProposer) {
	t.Helper()
	o := retentionOptions(t, dir, nil)
	if segmentBytes > 0 {
		o.SegmentBytes = segmentBytes
	}
	o.Replicated = true
	o.Logger = testLogger(t)
	b := mustOpen(t, o)
	p := &loopProposer{b: b, held: make(chan heldProposal, 4), term: 1, next: b.RaftLog().LastIndex()}
	b.SetProposer(p)
	return b, p
}

func indexFiles(t *testing.T, dir string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*", "*", "*.idx"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range m {
		if _, err := os.Stat(f); err == nil {
			n++
		}
	}
	return n
}

// reapply hands every entry of b's raft log after b's applied index to ApplyEntry, as raft
// does after a restart.
func reapply(t *testing.T, b *Broker) {
	t.Helper()
	l := b.RaftLog()
	for i := b.AppliedIndex() + 1; i <= l.LastIndex(); i++ {
		ents, err := l.Entries(i, i+1, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.ApplyEntry(i, ents[0].Term, ents[0].Data); err != nil {
			t.Fatalf("apply entry %d again: %v", i, err)
		}
	}
}

// TestReplicatedRetention: in cluster mode the leader's retention pass is a log record; applying
// it moves the partition's start (the raft log stays whole), the index files below the start
// go only after a checkpoint, and applying the record again after a restart from an older
// checkpoint or from no checkpoint at all leaves the same start and the same messages.
func TestReplicatedRetention(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	// One log segment: nothing is compacted (raftcompact_test.go covers that), so the
	// restart without a checkpoint below can apply every entry again.
	b, _ := replRetentionBrokerSegment(t, dir, 1<<20)
	mustCreate(t, b, "a", 1)
	const n = 200
	for i := 0; i < n; i++ {
		if _, err := b.Produce(ctx, "a", []Message{{Value: []byte(fmt.Sprintf("v%d", i)), Partition: 0}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	before := indexFiles(t, dir)
	last := b.RaftLog().LastIndex()
	b.EnforceRetention()
	if b.RaftLog().LastIndex() != last+1 {
		t.Fatalf("retention proposed %d entries, want one record", b.RaftLog().LastIndex()-last)
	}
	info, err := b.Topic("a")
	if err != nil {
		t.Fatal(err)
	}
	start := info.Partitions[0].StartOffset
	if start == 0 || start%16 != 0 {
		t.Fatalf("start after the retention record: %d", start)
	}
	// Applying the record signals the checkpointer, which may already have run: files may go
	// only once a checkpoint on disk records the new start.
	if got := indexFiles(t, dir); got != before {
		cp, err := loadCheckpoint(dir)
		if err != nil || cp == nil || len(cp.Partitions) != 1 || cp.Partitions[0].Start < start {
			t.Fatalf("index files went from %d to %d before a checkpoint recorded the new start %d (checkpoint %+v, %v)", before, got, start, cp, err)
		}
	}
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if got, want := indexFiles(t, dir), before-int(start/16); got != want {
		t.Fatalf("%d index files after the checkpoint, want %d", got, want)
	}
	check := func(b *Broker) {
		t.Helper()
		got := fetchAll(t, b, "a", 0)
		if len(got) != int(n-start) || got[0].Offset != start {
			t.Fatalf("%d messages from offset %d, want %d from %d", len(got), got[0].Offset, n-start, start)
		}
		for _, m := range got {
			if string(m.Value) != fmt.Sprintf("v%d", m.Offset) {
				t.Fatalf("offset %d holds %q", m.Offset, m.Value)
			}
		}
	}
	check(b)
	b.EnforceRetention() // nothing more to drop: no record
	if b.RaftLog().LastIndex() != last+1 {
		t.Fatal("a second pass with nothing to drop proposed a record")
	}
	b.Close()

	// The checkpoint covers the record: nothing is applied again.
	b, _ = replRetentionBrokerSegment(t, dir, 1<<20)
	check(b)
	b.Close()

	// No checkpoint: every entry, the record included, is applied again.
	if err := os.Remove(filepath.Join(dir, checkpointFileName)); err != nil {
		t.Fatal(err)
	}
	b, _ = replRetentionBrokerSegment(t, dir, 1<<20)
	defer b.Close()
	reapply(t, b)
	check(b)
	reapply(t, b)
}

// testLogger writes a broker's log lines to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestRetentionConcurrentWithTraffic: retention passes and checkpoints (which delete the index
// files retention let go) run while messages are produced and read, on a single node and in
// cluster mode. Run it with -race. A read that finds its offset let go answers
// ErrOffsetOutOfRange; any other error, or a message at the wrong offset, fails.
func TestRetentionConcurrentWithTraffic(t *testing.T) {
	for _, replicated := range []bool{false, true} {
		t.Run(map[bool]string{false: "single", true: "replicated"}[replicated], func(t *testing.T) {
			dir := t.TempDir()
			ctx := context.Background()
			var b *Broker
			if replicated {
				b, _ = replRetentionBroker(t, dir)
			} else {
				b = mustOpen(t, retentionOptions(t, dir, nil))
			}
			defer b.Close()
			mustCreate(t, b, "a", 1)
			const n = 300
			var wg sync.WaitGroup
			stop := make(chan struct{})
			errs := make(chan error, 3)
			wg.Add(2)
			go func() { // reader
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					info, err := b.Topic("a")
					if err != nil {
						errs <- err
						return
					}
					res, err := b.Fetch(ctx, "a", 0, FetchOptions{Offset: info.Partitions[0].StartOffset, MaxMessages: 50})
					if errors.Is(err, ErrOffsetOutOfRange) {
						continue
					}
					if err != nil {
						errs <- fmt.Errorf("fetch: %w", err)
						return
					}
					for _, m := range res.Messages {
						if string(m.Value) != fmt.Sprintf("v%d", m.Offset) {
							errs <- fmt.Errorf("offset %d holds %q", m.Offset, m.Value)
							return
						}
					}
				}
			}()
			go func() { // retention and checkpoints
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					b.EnforceRetention()
					if replicated {
						if _, err := b.CompactLog(); err != nil {
							errs <- fmt.Errorf("compact: %w", err)
							return
						}
					}
					if err := b.checkpoint(); err != nil {
						errs <- fmt.Errorf("checkpoint: %w", err)
						return
					}
				}
			}()
			for i := 0; i < n; i++ {
				if _, err := b.Produce(ctx, "a", []Message{{Value: []byte(fmt.Sprintf("v%d", i)), Partition: 0}}, ""); err != nil {
					t.Fatal(err)
				}
			}
			close(stop)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			b.EnforceRetention()
			if info, _ := b.Topic("a"); info.Partitions[0].StartOffset == 0 {
				t.Fatal("retention let nothing go")
			}
		})
	}
}
