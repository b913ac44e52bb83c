package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// retainCompact runs a retention pass and then compacts the raft log, as the periodic pass does.
func retainCompact(t *testing.T, b *Broker) {
	t.Helper()
	b.EnforceRetention()
	if _, err := b.CompactLog(); err != nil {
		t.Fatal(err)
	}
}

// produceSeq produces n messages "v<i>" (i from first) to partition 0 of topic.
func produceSeq(t *testing.T, b *Broker, topic string, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		if _, err := b.Produce(context.Background(), topic, []Message{{Value: []byte(fmt.Sprintf("v%d", i)), Partition: 0}}, ""); err != nil {
			t.Fatal(err)
		}
	}
}

// checkRetained fails unless partition 0 of topic serves "v<offset>" for every offset from its
// start to end.
func checkRetained(t *testing.T, b *Broker, topic string, end int64) int64 {
	t.Helper()
	got := fetchAll(t, b, topic, 0)
	if len(got) == 0 {
		t.Fatal("no message retained")
	}
	start := got[0].Offset
	if int64(len(got)) != end-start {
		t.Fatalf("%d messages from offset %d, want %d", len(got), start, end-start)
	}
	for i, m := range got {
		if m.Offset != start+int64(i) || string(m.Value) != fmt.Sprintf("v%d", m.Offset) {
			t.Fatalf("message %d: offset %d holds %q", i, m.Offset, m.Value)
		}
	}
	return start
}

func logSegments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "log", "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// TestReplicatedCompaction: in cluster mode retention deletes the commit-log segments no
// partition needs once a checkpoint covers them, and that is raft log compaction: the raft
// log's first index moves past them, the compaction point's term stays known, reads below it
// answer ErrRaftCompacted, and a restart finds the same log. A crash between recording the
// compaction point and deleting the segments leaves them behind: the next open deletes them. A
// node whose checkpoint is gone cannot rebuild from a compacted log and refuses to start.
func TestReplicatedCompaction(t *testing.T) {
	dir := t.TempDir()
	b, _ := replRetentionBroker(t, dir)
	mustCreate(t, b, "a", 1)
	const n = 300
	produceSeq(t, b, "a", 0, n)
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	before := logSegments(t, dir)
	saved := make(map[string][]byte)
	for _, f := range before {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		saved[f] = data
	}
	retainCompact(t, b) // the retention record moves the start
	if err := b.checkpoint(); err != nil {
		t.Fatal(err)
	}
	retainCompact(t, b) // the checkpoint covers the record: segments go
	l := b.RaftLog()
	first := l.FirstIndex()
	after := logSegments(t, dir)
	if first <= 1 || len(after) >= len(before) {
		t.Fatalf("nothing compacted: first index %d, %d log segments before, %d after", first, len(before), len(after))
	}
	ci, ct := l.Compacted()
	if ci != first-1 || ct != 1 {
		t.Fatalf("compaction point (%d, %d), first index %d", ci, ct, first)
	}
	if term, err := l.Term(ci); err != nil || term != 1 {
		t.Fatalf("term of the compaction point: %d, %v", term, err)
	}
	if _, err := l.Term(ci - 1); !errors.Is(err, ErrRaftCompacted) {
		t.Fatalf("term below the compaction point: %v", err)
	}
	if _, err := l.Entries(ci, ci+1, 1<<20); !errors.Is(err, ErrRaftCompacted) {
		t.Fatalf("entries at the compaction point: %v", err)
	}
	if ents, err := l.Entries(first, first+1, 1<<20); err != nil || len(ents) != 1 || ents[0].Index != first {
		t.Fatalf("first entry: %v, %v", ents, err)
	}
	start := checkRetained(t, b, "a", n)
	last := l.LastIndex()
	b.Close()

	reopen := func() *Broker {
		t.Helper()
		b, _ := replRetentionBroker(t, dir)
		if got := b.RaftLog().FirstIndex(); got != first {
			t.Fatalf("first index %d after a restart, want %d", got, first)
		}
		if got := b.RaftLog().LastIndex(); got != last {
			t.Fatalf("last index %d after a restart, want %d", got, last)
		}
		if got := checkRetained(t, b, "a", n); got != start {
			t.Fatalf("start %d after a restart, want %d", got, start)
		}
		return b
	}
	reopen().Close()

	// A crash after raft-compacted was written, before the segments were deleted.
	for f, data := range saved {
		if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(f, data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	b = reopen()
	b.Close()
	if got := logSegments(t, dir); !slices.Equal(got, after) {
		t.Fatalf("log segments after the open that finished the compaction: %v, want %v", got, after)
	}

	// Without a checkpoint there is nothing to rebuild from.
	if err := os.Remove(filepath.Join(dir, checkpointFileName)); err != nil {
		t.Fatal(err)
	}
	o := retentionOptions(t, dir, nil)
	o.Replicated = true
	if b, err := Open(o); err == nil || !strings.Contains(err.Error(), "compacted") {
		if b != nil {
			b.Close()
		}
		t.Fatalf("open without a checkpoint over a compacted log: %v", err)
	}
}

// TestReplicatedCompactionKeepsPrepared: a prepared XA branch pins the segment its prepare
// batch is in (a replicated log is never re-written at its head): compaction stops below it,
// and the branch can still be committed after a restart.
func TestReplicatedCompactionKeepsPrepared(t *testing.T) {
	dir := t.TempDir()
	b, _ := replRetentionBroker(t, dir)
	mustCreate(t, b, "a", 1)
	mustCreate(t, b, "tx", 2)
	produceSeq(t, b, "a", 0, 20)
	x := Xid{FormatID: 1, Gtrid: []byte("g1"), Bqual: []byte("b1")}
	prepareBranch(t, b, x, "tx", "p0", "p1")
	b.txMu.Lock()
	preparePos := b.txs[x.String()].preparePos
	b.txMu.Unlock()
	produceSeq(t, b, "a", 20, 300)
	for range 2 {
		retainCompact(t, b)
		if err := b.checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	retainCompact(t, b)
	if start := b.log.start(); start > preparePos {
		t.Fatalf("the log starts at %d, past the prepared branch's batch at %d", start, preparePos)
	}
	b.Close()
	b, _ = replRetentionBroker(t, dir)
	defer b.Close()
	if _, err := b.XACommit(context.Background(), x, false); err != nil {
		t.Fatalf("commit the prepared branch after compaction and a restart: %v", err)
	}
	got := append(fetchAll(t, b, "tx", 0), fetchAll(t, b, "tx", 1)...)
	if len(got) != 2 || string(got[0].Value) != "p0" || string(got[1].Value) != "p1" {
		t.Fatalf("committed branch reads %v", got)
	}
}

// copySnapshot copies every file of m from src into staging, as a member that catches up does.
func copySnapshot(t *testing.T, src *Broker, m SnapshotManifest, staging string) {
	t.Helper()
	for _, f := range m.Files {
		r, size, err := src.OpenSnapshotFile(m.Index, f.Name)
		if err != nil {
			t.Fatal(err)
		}
		if size != f.Size {
			t.Fatalf("%s: size %d, manifest %d", f.Name, size, f.Size)
		}
		path := filepath.Join(staging, f.Name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil || int64(len(data)) != f.Size {
			t.Fatalf("%s: read %d bytes of %d: %v", f.Name, len(data), f.Size, err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteSnapshotState(staging, m); err != nil {
		t.Fatal(err)
	}
}

// TestReplicatedSnapshotInstall: a member whose log is behind a compacted leader installs the
// leader's snapshot (its retained segments, index and idempotency files, checkpoint and topics)
// over its own older state, opens at the snapshot's index with the leader's compaction point,
// takes the entries after it, and then serves exactly what the leader serves; a retried
// Idempotency-Key the leader knows is a duplicate on it too. Files deleted on the leader after
// the snapshot was made stay readable through its links.
func TestReplicatedSnapshotInstall(t *testing.T) {
	leaderDir, followerDir := t.TempDir(), t.TempDir()
	ctx := context.Background()
	lb, _ := replRetentionBroker(t, leaderDir)
	defer func() { lb.Close() }()
	mustCreate(t, lb, "a", 1)
	produceSeq(t, lb, "a", 0, 50)
	// The follower's state: the leader's as it was then (a member that stopped here).
	fb, _ := replRetentionBroker(t, followerDir)
	l := lb.RaftLog()
	for i := fb.RaftLog().LastIndex() + 1; i <= l.LastIndex(); i++ {
		ents, err := l.Entries(i, i+1, 1<<30)
		if err != nil {
			t.Fatal(err)
		}
		if err := fb.RaftLog().Append([]RaftEntry{ents[0]}); err != nil {
			t.Fatal(err)
		}
		if err := fb.ApplyEntry(i, ents[0].Term, ents[0].Data); err != nil {
			t.Fatal(err)
		}
	}
	fb.Close()

	produceSeq(t, lb, "a", 50, 300)
	res, err := lb.Produce(ctx, "a", []Message{{Value: []byte("v350"), Partition: 0}}, "key-350")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		retainCompact(t, lb)
		if err := lb.checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	retainCompact(t, lb)
	if lb.RaftLog().FirstIndex() <= fb.RaftLog().LastIndex()+1 {
		t.Fatalf("the leader's log still holds what the follower needs: first index %d", lb.RaftLog().FirstIndex())
	}
	m, err := lb.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if m.Index != lb.AppliedIndex() || m.CompactedIndex != lb.RaftLog().FirstIndex()-1 {
		t.Fatalf("snapshot at %d (compacted %d), applied %d, first index %d", m.Index, m.CompactedIndex, lb.AppliedIndex(), lb.RaftLog().FirstIndex())
	}
	if again, err := lb.Snapshot(); err != nil || again.Index != m.Index || len(again.Files) != len(m.Files) {
		t.Fatalf("a second request for the same state made another snapshot: %v", err)
	}
	if _, _, err := lb.OpenSnapshotFile(m.Index, "../raft-compacted"); err == nil {
		t.Fatal("a name outside the manifest was served")
	}
	// More traffic and retention on the leader while the member copies. The member takes the
	// entries after the snapshot as raft sends them: read before compaction may delete them.
	var after []RaftEntry
	take := func() {
		for i := m.Index + uint64(len(after)) + 1; i <= l.LastIndex(); i++ {
			ents, err := l.Entries(i, i+1, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			after = append(after, ents[0])
		}
	}
	produceSeq(t, lb, "a", 351, 200)
	take()
	for range 2 {
		retainCompact(t, lb)
		if err := lb.checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	take()
	staging := filepath.Join(followerDir, "staging")
	copySnapshot(t, lb, m, staging)
	if err := InstallSnapshot(followerDir, staging); err != nil {
		t.Fatal(err)
	}
	// Installing again (a crash after the moves, before the marker went) changes nothing.
	if err := InstallSnapshot(followerDir, staging); err != nil {
		t.Fatal(err)
	}
	fb, _ = replRetentionBroker(t, followerDir)
	defer func() { fb.Close() }()
	if fb.AppliedIndex() != m.Index || fb.RaftLog().FirstIndex() != m.CompactedIndex+1 || fb.RaftLog().LastIndex() != m.Index {
		t.Fatalf("after install: applied %d, first %d, last %d; snapshot %d compacted %d",
			fb.AppliedIndex(), fb.RaftLog().FirstIndex(), fb.RaftLog().LastIndex(), m.Index, m.CompactedIndex)
	}
	for _, e := range after {
		if err := fb.RaftLog().Append([]RaftEntry{e}); err != nil {
			t.Fatal(err)
		}
		if err := fb.ApplyEntry(e.Index, e.Term, e.Data); err != nil {
			t.Fatalf("apply entry %d after the snapshot: %v", e.Index, err)
		}
	}
	want := fetchAll(t, lb, "a", 0)
	got := fetchAll(t, fb, "a", 0)
	if len(got) != len(want) || got[0].Offset != want[0].Offset {
		t.Fatalf("follower serves %d messages from %d, leader %d from %d", len(got), got[0].Offset, len(want), want[0].Offset)
	}
	for i := range want {
		if got[i].Offset != want[i].Offset || string(got[i].Value) != string(want[i].Value) {
			t.Fatalf("message %d: follower %d %q, leader %d %q", i, got[i].Offset, got[i].Value, want[i].Offset, want[i].Value)
		}
	}
	// The member takes over (a new term): a retry of the key the leader stored is a duplicate.
	p := &loopProposer{b: fb, held: make(chan heldProposal, 4), term: 2, next: fb.RaftLog().LastIndex()}
	fb.SetProposer(p)
	again, err := fb.Produce(ctx, "a", []Message{{Value: []byte("v350"), Partition: 0}}, "key-350")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Offsets[0] != res.Offsets[0] {
		t.Fatalf("retry on the member that installed the snapshot: %+v, first answer %+v", again, res)
	}
}
