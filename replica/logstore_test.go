package replica

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"go.etcd.io/raft/v3"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/cluster"
)

// TestCompactedTermIsRaftsErrCompacted: raft asks Storage.Term for an index it has just checked
// is at or above the compaction point, but the retention goroutine compacts the broker's log
// concurrently with the Ready loop, so the index may be compacted by the time Term reads it.
// Raft accepts only its own ErrCompacted (compared with ==) there and panics on any other
// error: the process of a leader sending to a follower would die. The member's log store must
// hand the broker's "compacted" to the storage adapter as cluster.ErrCompacted, as it does for
// Entries, so that raft gets raft.ErrCompacted and sends a snapshot instead.
func TestCompactedTermIsRaftsErrCompacted(t *testing.T) {
	c := compactingCluster(t)
	l := c.leader()
	if _, err := c.bs[l].CreateTopic("a", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		v := fmt.Sprintf("v%d", i)
		if _, err := c.bs[l].Produce(context.Background(), "a", []broker.Message{{Value: []byte(v)}}, v); err != nil {
			t.Fatal(err)
		}
	}
	c.compactPast(l, 10)
	dir := c.dirs[l]
	c.stop(l)

	opts := broker.NewOptions(dir)
	opts.Replicated = true
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	c.tune(&opts)
	b, err := broker.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st, err := cluster.OpenStorage(dir, logStore{b.RaftLog()})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := st.FirstIndex()
	if first < 3 {
		t.Fatalf("the log starts at %d: not compacted", first)
	}
	if _, err := st.Term(first - 1); err != nil {
		t.Fatalf("term of the compaction point %d: %v", first-1, err)
	}
	if _, err := st.Term(first - 2); err != raft.ErrCompacted {
		t.Fatalf("term of compacted entry %d: %v, want raft.ErrCompacted itself", first-2, err)
	}
	if _, err := (logStore{b.RaftLog()}).Term(first - 2); err != cluster.ErrCompacted {
		t.Fatalf("log store term of compacted entry %d: %v, want cluster.ErrCompacted", first-2, err)
	}
}
