package replica

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
)

// TestFollowerConfChangeFailureFailsBroker: a follower fails to apply a committed membership
// change: the fsync of its members file (OnConfChange) or of its raft state (the stored
// membership) fails. Its raft node stops, as for a normal entry that fails to apply
// (TestFollowerApplyFailureFailsBroker), and its broker must fail with it: the members it holds
// in memory may already include the change its disk lacks, and a program that embeds the
// library, or a health check that asks the broker, must not see a healthy broker. Err names
// the entry, Failed is closed, and every later write through it is refused with ErrStorage.
// The failure is injected with the fsync hook: a real disk does not fail one file's fsync on
// cue.
func TestFollowerConfChangeFailureFailsBroker(t *testing.T) {
	for _, file := range []string{membersFileName, "raft-state"} {
		t.Run(file, func(t *testing.T) {
			c := newTestCluster(t)
			l := c.leader()
			f := (l + 1) % 3
			if _, err := c.bs[l].CreateTopic("a", broker.TopicConfig{Partitions: 1}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the follower to apply the topic", func() bool { return c.bs[f].AppliedIndex() == c.bs[l].AppliedIndex() })
			restore := failSyncs(filepath.Join(c.dirs[f], file))
			defer restore()
			p4 := Peer{ID: 4, RaftAddr: testenv.FreeAddr(t), HTTPAddr: "127.0.0.1:18084"}
			if err := c.ms[l].AddMember(context.Background(), p4); err != nil {
				t.Fatal(err)
			}
			expectBrokerFailed(t, c, f, "membership change", "membership change", restore)
		})
	}
}
