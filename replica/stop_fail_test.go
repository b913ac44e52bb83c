package replica

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/imagomq/imago/broker"
)

// TestFollowerSaveFailureFailsBroker: a follower cannot persist what raft hands it, so its
// raft node stops on the failed save, not on an apply. Its broker must fail with it, as for an
// entry that fails to apply (TestFollowerApplyFailureFailsBroker): a program that embeds the
// library, or a health check that asks the broker, must not see a healthy broker behind a
// stopped node. Err names what could not be saved, Failed is closed, and every later write
// through it is refused with ErrStorage.
//
//   - log: the fsync of the follower's log segment fails while the leader writes. The log's
//     own failure fails the broker before the node stops (RaftLog.Sync): this case passed
//     before the member failed the broker on every stop, and pins that.
//   - raft-state: the follower's term and vote cannot be written when leadership moves to
//     the third member. Nothing of the broker's touched the disk, so only the member can
//     fail it: the broker looked healthy until it did.
func TestFollowerSaveFailureFailsBroker(t *testing.T) {
	for _, tc := range []struct {
		name, file, what string
	}{
		{"log", "log" + string(filepath.Separator), "fsync segment"},
		{"raft-state", "raft-state", "save raft state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t)
			l := c.leader()
			f, o := (l+1)%3, (l+2)%3
			if _, err := c.bs[l].CreateTopic("a", broker.TopicConfig{Partitions: 1}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the follower to apply the topic", func() bool { return c.bs[f].AppliedIndex() == c.bs[l].AppliedIndex() })
			restore := failSyncs(filepath.Join(c.dirs[f], tc.file))
			defer restore()
			switch tc.name {
			case "log":
				if _, err := c.bs[l].Produce(context.Background(), "a", []broker.Message{{Value: []byte("x")}}, ""); err != nil {
					t.Fatal(err)
				}
			case "raft-state":
				if err := c.ms[l].TransferLeadership(context.Background(), uint64(o+1)); err != nil {
					t.Fatal(err)
				}
			}
			expectBrokerFailed(t, c, f, "persist", tc.what, restore)
		})
	}
}

// TestFollowerSnapshotCopyFailureFailsBroker: a follower that was down while the leader
// compacted its log is sent a snapshot and cannot copy it (the fsync of a staged file fails).
// Its node stops with that error, which is neither a save nor an apply, and its broker must
// fail with it, unlike the stop of a snapshot that was staged
// (TestFollowerCatchesUpBySnapshot), which is planned.
func TestFollowerSnapshotCopyFailureFailsBroker(t *testing.T) {
	c := compactingCluster(t)
	l := c.leader()
	if _, err := c.bs[l].CreateTopic("a", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	produce := func(count int) {
		t.Helper()
		for i := range count {
			if _, err := c.bs[l].Produce(context.Background(), "a", []broker.Message{{Value: []byte{byte(i)}}}, ""); err != nil {
				t.Fatal(err)
			}
		}
	}
	produce(40)
	f := (l + 1) % 3
	waitFor(t, "the follower to apply everything", func() bool { return c.bs[f].AppliedIndex() == c.bs[l].AppliedIndex() })
	behind := c.bs[f].RaftLog().LastIndex()
	c.stop(f)
	produce(400)
	c.compactPast(l, behind)
	restore := failSyncs(filepath.Join(c.dirs[f], stagingDirName))
	defer restore()
	c.start(f, false)
	expectBrokerFailed(t, c, f, "stage the snapshot", "stage the snapshot", restore)
	if c.ms[f].SnapshotStaged() {
		t.Fatal("the follower says it staged the snapshot it could not copy")
	}
}
