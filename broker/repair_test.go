package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
)

// lastSegment returns the path of the active commit-log segment.
func lastSegment(t *testing.T, dir string) string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "log", "*.log"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no segments: %v", err)
	}
	sort.Strings(names)
	return names[len(names)-1]
}

// produceN writes n one-message requests "v0".."v{n-1}" to partition 0 and returns the log
// size after each request.
func produceN(t *testing.T, b *Broker, n int) []int64 {
	t.Helper()
	var ends []int64
	for i := 0; i < n; i++ {
		if _, err := b.Produce(context.Background(), "t", []Message{msg(fmt.Sprintf("v%d", i))}, ""); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, b.log.end.Load())
	}
	return ends
}

func values(ms []FetchedMessage) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Value))
	}
	return out
}

func wantValues(t *testing.T, got []FetchedMessage, n int) {
	t.Helper()
	v := values(got)
	if len(v) != n {
		t.Fatalf("%d messages survive (%v), want exactly v0..v%d", len(v), v, n-1)
	}
	for i, s := range v {
		if s != fmt.Sprintf("v%d", i) || got[i].Offset != int64(i) {
			t.Fatalf("message %d is %q at offset %d", i, s, got[i].Offset)
		}
	}
}

func TestTornTail(t *testing.T) {
	cases := []struct {
		name    string
		damage  func(t *testing.T, seg string, ends []int64)
		survive int
		// surviveBehindCheckpoint, when not 0, is what survives when the damage lies behind
		// a clean shutdown's checkpoint: start-up does not re-read the log there, and reads
		// verify each record's own CRC, so a damaged batch header over intact records loses
		// nothing.
		surviveBehindCheckpoint int
	}{
		{"truncated mid-record of the last batch", func(t *testing.T, seg string, ends []int64) {
			if err := os.Truncate(seg, ends[9]-7); err != nil {
				t.Fatal(err)
			}
		}, 9, 0},
		{"truncated inside the last batch header", func(t *testing.T, seg string, ends []int64) {
			if err := os.Truncate(seg, ends[8]+20); err != nil {
				t.Fatal(err)
			}
		}, 9, 0},
		{"random bytes over the last two records", func(t *testing.T, seg string, ends []int64) {
			f, err := os.OpenFile(seg, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			junk := []byte("\xde\xad\xbe\xef garbage over records \x00\xff")
			if _, err := f.WriteAt(junk, ends[7]+batchHeaderSize+30); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(junk, ends[8]+batchHeaderSize+30); err != nil {
				t.Fatal(err)
			}
		}, 8, 0},
		// A flipped byte in a batch that valid batches follow is corruption, not a torn tail:
		// TestDamageTable (corruption_test.go) asserts that start-up refuses.
		{"zeros appended (preallocated tail)", func(t *testing.T, seg string, ends []int64) {
			f, err := os.OpenFile(seg, os.O_RDWR|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Write(make([]byte, 4096))
		}, 10, 0},
	}
	for _, tc := range cases {
		for _, withCheckpoint := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/checkpoint=%v", tc.name, withCheckpoint), func(t *testing.T) {
				dir := t.TempDir()
				b := mustOpen(t, testOptions(t, dir))
				mustCreate(t, b, "t", 1)
				ends := produceN(t, b, 10)
				if withCheckpoint {
					b.Close() // checkpoint at the end: the damage puts the log behind it
				} else {
					b.abandon() // crash: the last checkpoint predates the messages
				}
				tc.damage(t, lastSegment(t, dir), ends)
				b = mustOpen(t, testOptions(t, dir))
				defer b.Close()
				survive := tc.survive
				if withCheckpoint && tc.surviveBehindCheckpoint != 0 {
					survive = tc.surviveBehindCheckpoint
				}
				wantValues(t, fetchAll(t, b, "t", 0), survive)
				res, err := b.Produce(context.Background(), "t", []Message{msg("after")}, "")
				if err != nil || res.Offsets[0].Offset != int64(survive) {
					t.Fatalf("produce after repair: %+v %v", res, err)
				}
			})
		}
	}
}

func TestTornMultiPartitionBatchIsCutWhole(t *testing.T) {
	dir := t.TempDir()
	b := mustOpen(t, testOptions(t, dir))
	mustCreate(t, b, "t", 2)
	if _, err := b.Produce(context.Background(), "t", []Message{{Value: []byte("a0"), Partition: 0}, {Value: []byte("a1"), Partition: 1}}, ""); err != nil {
		t.Fatal(err)
	}
	before := b.log.end.Load()
	if _, err := b.Produce(context.Background(), "t", []Message{{Value: []byte("b0"), Partition: 0}, {Value: []byte("b1"), Partition: 1}}, ""); err != nil {
		t.Fatal(err)
	}
	b.abandon()
	// Cut inside the second record of the second batch: its first record (to partition 0)
	// is intact on disk, but the batch is one unit, so it must go too.
	first := batchHeaderSize + recordSize(&Message{Value: []byte("b0")})
	if err := os.Truncate(lastSegment(t, dir), before+int64(first)+10); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, testOptions(t, dir))
	defer b.Close()
	if v := values(fetchAll(t, b, "t", 0)); len(v) != 1 || v[0] != "a0" {
		t.Fatalf("partition 0 holds %v, want [a0]", v)
	}
	if v := values(fetchAll(t, b, "t", 1)); len(v) != 1 || v[0] != "a1" {
		t.Fatalf("partition 1 holds %v, want [a1]", v)
	}
}

func TestIndexRebuild(t *testing.T) {
	cases := map[string]func(t *testing.T, dir string){
		"index directory deleted": func(t *testing.T, dir string) {
			os.RemoveAll(filepath.Join(dir, "index"))
		},
		"index entries zeroed": func(t *testing.T, dir string) {
			names, _ := filepath.Glob(filepath.Join(dir, "index", "*", "*.idx"))
			for _, n := range names {
				f, _ := os.OpenFile(n, os.O_RDWR, 0)
				f.WriteAt(make([]byte, 64*indexEntrySize), 0)
				f.Close()
			}
		},
		"checkpoint garbage, moved aside by the operator": func(t *testing.T, dir string) {
			path := filepath.Join(dir, checkpointFileName)
			os.WriteFile(path, []byte("{not json"), 0o644)
			if b, err := Open(testOptions(t, dir)); err == nil {
				b.Close()
				t.Fatal("started with an unreadable checkpoint")
			}
			os.Rename(path, path+".unreadable")
		},
		"checkpoint deleted": func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, checkpointFileName))
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			b := mustOpen(t, testOptions(t, dir))
			mustCreate(t, b, "t", 1)
			produceN(t, b, 40)
			b.Close()
			damage(t, dir)
			b = mustOpen(t, testOptions(t, dir))
			defer b.Close()
			wantValues(t, fetchAll(t, b, "t", 0), 40)
		})
	}
}

func TestSegmentRollAndRebuildKeepsOffsets(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(t, dir)
	o.SegmentBytes = 1024
	o.IndexSegmentEntries = 8
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	mustCreate(t, b, "quiet", 1)
	b.Produce(context.Background(), "quiet", []Message{msg("q0")}, "")
	produceN(t, b, 100)
	if n := len(b.log.segmentBounds()); n < 5 {
		t.Fatalf("only %d segments with 1 KiB segments", n)
	}
	b.Close()
	// Drop the first segments as retention would, and every index: the rebuild must start
	// from the snapshot at the head of the first remaining segment.
	segs, _ := filepath.Glob(filepath.Join(dir, "log", "*.log"))
	sort.Strings(segs)
	for _, s := range segs[:3] {
		os.Remove(s)
	}
	os.RemoveAll(filepath.Join(dir, "index"))
	os.Remove(filepath.Join(dir, checkpointFileName))
	b = mustOpen(t, o)
	defer b.Close()
	got := fetchAll(t, b, "t", 0)
	if len(got) == 0 || got[len(got)-1].Offset != 99 || string(got[len(got)-1].Value) != "v99" {
		t.Fatalf("after rebuild: %d messages, last %+v", len(got), got[len(got)-1])
	}
	for i, m := range got {
		if m.Offset != got[0].Offset+int64(i) || string(m.Value) != fmt.Sprintf("v%d", m.Offset) {
			t.Fatalf("message %d: offset %d value %q", i, m.Offset, m.Value)
		}
	}
	// The quiet topic has no message left in the log, but keeps its offsets.
	info, _ := b.Topic("quiet")
	if info.Partitions[0].EndOffset != 1 {
		t.Fatalf("quiet topic end offset %d after rebuild, want 1", info.Partitions[0].EndOffset)
	}
	res, _ := b.Produce(context.Background(), "quiet", []Message{msg("q1")}, "")
	if res.Offsets[0].Offset != 1 {
		t.Fatalf("quiet topic reused offset %d", res.Offsets[0].Offset)
	}
}
