package replica

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
)

// compactingCluster is a test cluster whose brokers roll small log segments and keep at most
// 2 KB per partition, with checkpoints every 20 ms and retention run by the test.
func compactingCluster(t *testing.T) *testCluster {
	return newTunedCluster(t, func(o *broker.Options) {
		o.SegmentBytes = 4096
		o.IndexSegmentEntries = 16
		o.RetentionBytes = 2000
		o.CheckpointInterval = 20 * time.Millisecond
		o.RetentionCheckInterval = time.Hour
	})
}

// retained reads every message partition 0 of topic retains on b: offsets and values.
func retained(t *testing.T, b *broker.Broker, topic string) (int64, []string) {
	t.Helper()
	info, err := b.Topic(topic)
	if err != nil {
		t.Fatal(err)
	}
	p := info.Partitions[0]
	res, err := b.Fetch(context.Background(), topic, 0, broker.FetchOptions{Offset: p.StartOffset, MaxMessages: 100000, MaxBytes: 64 << 20})
	if err != nil {
		t.Fatalf("fetch %s from %d: %v", topic, p.StartOffset, err)
	}
	var out []string
	for i, m := range res.Messages {
		if m.Offset != p.StartOffset+int64(i) {
			t.Fatalf("message %d at offset %d, start %d", i, m.Offset, p.StartOffset)
		}
		out = append(out, string(m.Value))
	}
	return p.StartOffset, out
}

// compactPast runs retention on every running member until the leader's raft log starts after
// index.
func (c *testCluster) compactPast(l int, index uint64) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("the leader's log to be compacted past %d", index), func() bool {
		for _, b := range c.bs {
			if b != nil {
				b.EnforceRetention()
				if _, err := b.CompactLog(); err != nil {
					c.t.Fatal(err)
				}
			}
		}
		return c.bs[l].RaftLog().FirstIndex() > index+1
	})
}

// TestFollowerCatchesUpBySnapshot: a follower that was down while the leader compacted the
// entries it needs is sent a snapshot; it copies the leader's retained segments and derived
// state, stops to install them, and after the restart (InstallStaged before the broker opens)
// takes the entries after the snapshot and serves exactly what the leader serves, keys
// included; it can then lead. A new member added after compaction joins the same way.
func TestFollowerCatchesUpBySnapshot(t *testing.T) {
	c := compactingCluster(t)
	ctx := context.Background()
	l := c.leader()
	if _, err := c.bs[l].CreateTopic("a", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	n := 0
	produce := func(at, count int) {
		t.Helper()
		for range count {
			v := fmt.Sprintf("v%d", n)
			if _, err := c.bs[at].Produce(ctx, "a", []broker.Message{{Value: []byte(v)}}, v); err != nil {
				t.Fatalf("produce %s: %v", v, err)
			}
			n++
		}
	}
	produce(l, 40)
	f := (l + 1) % 3
	waitFor(t, "the follower to apply everything", func() bool { return c.bs[f].AppliedIndex() == c.bs[l].AppliedIndex() })
	behind := c.bs[f].RaftLog().LastIndex()
	c.stop(f)
	produce(l, 400)
	c.compactPast(l, behind)

	// The follower comes back, is sent a snapshot, stages it and stops.
	c.start(f, false)
	m := c.ms[f]
	select {
	case <-m.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the follower did not stop to install a snapshot")
	}
	if !m.SnapshotStaged() {
		t.Fatalf("the follower stopped without staging a snapshot: %s", m.Status().Error)
	}
	// A planned stop: the broker is not failed (failBroker), the restart installs the snapshot.
	if err := c.bs[f].Err(); err != nil {
		t.Fatalf("the follower's broker failed when it stopped to install a snapshot: %v", err)
	}
	c.stop(f)
	// A crash after the staged state moved in place, before the raft state and the marker
	// were done: the next start installs again and finishes.
	if err := broker.InstallSnapshot(c.dirs[f], filepath.Join(c.dirs[f], stagingDirName)); err != nil {
		t.Fatal(err)
	}
	if err := InstallStaged(c.dirs[f], nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.dirs[f], installMarkerName)); !os.IsNotExist(err) {
		t.Fatalf("the install marker is still there: %v", err)
	}
	c.start(f, false)
	if first := c.bs[f].RaftLog().FirstIndex(); first <= behind+1 {
		t.Fatalf("the follower's log starts at %d after the install, it had %d", first, behind)
	}
	produce(l, 30)
	waitFor(t, "the follower to catch up", func() bool { return c.bs[f].AppliedIndex() == c.bs[l].AppliedIndex() })
	same := func(i int) {
		t.Helper()
		ls, lv := retained(t, c.bs[l], "a")
		fs, fv := retained(t, c.bs[i], "a")
		if ls != fs || fmt.Sprint(lv) != fmt.Sprint(fv) {
			t.Fatalf("node %d serves %d messages from %d, the leader %d from %d", i+1, len(fv), fs, len(lv), ls)
		}
		if len(lv) == 0 || lv[len(lv)-1] != fmt.Sprintf("v%d", n-1) {
			t.Fatalf("the leader's last message: %v", lv[max(0, len(lv)-1):])
		}
	}
	same(f)

	// The follower leads: it knows the keys the old leader stored.
	c.stop(l)
	nl := c.leader()
	if nl != f {
		if err := c.ms[nl].TransferLeadership(ctx, uint64(f+1)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the caught-up member to lead", func() bool { return c.ms[f].Serving() })
		nl = f
	}
	v := fmt.Sprintf("v%d", n-1)
	if res, err := c.bs[nl].Produce(ctx, "a", []broker.Message{{Value: []byte(v)}}, v); err != nil || !res.Duplicate {
		t.Fatalf("retry of %s on the member that installed the snapshot: %+v, %v", v, res, err)
	}
	produce(nl, 10)
	c.start(l, false)
	waitFor(t, "the old leader to catch up", func() bool { return c.bs[l].AppliedIndex() == c.bs[nl].AppliedIndex() })
	same(nl)
}

// TestInstallStagedWithoutMarker: a copy cut short (no marker) is deleted at the next start and
// nothing else in the directory changes; the member is sent the snapshot again.
func TestInstallStagedWithoutMarker(t *testing.T) {
	dir := t.TempDir()
	staging := filepath.Join(dir, stagingDirName)
	if err := os.MkdirAll(filepath.Join(staging, "log"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(staging, "log", "00000000000000000000.log"), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := InstallStaged(dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(staging); !os.IsNotExist(err) {
		t.Fatalf("the unfinished copy is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "keep")); err != nil {
		t.Fatalf("install without a marker touched other files: %v", err)
	}
}
