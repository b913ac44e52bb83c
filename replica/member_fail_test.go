package replica

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/fsutil"
)

// TestLeaderWhoseBrokerFailedStepsAside: a broker refuses writes until a restart once a write,
// fsync or checkpoint of its storage failed (broker.Err). A leader in that state must not go on
// leading: heartbeats need no disk, so its raft node would keep the leadership forever while
// every write through the cluster fails. The member stops its node instead, and the two
// others elect a leader that serves. (Found by the simulation with -replica.checkpoints: a
// power loss that began in a checkpoint's index fsync.)
func TestLeaderWhoseBrokerFailedStepsAside(t *testing.T) {
	c := newTestCluster(t)
	l := c.leader()
	if _, err := c.bs[l].CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.bs[l].Produce(context.Background(), "t", []broker.Message{{Value: []byte("a")}}, ""); err != nil {
		t.Fatal(err)
	}
	// The leader's index files can no longer be synced: its next checkpoint fails.
	index := filepath.Join(c.dirs[l], "index") + string(filepath.Separator)
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if strings.HasPrefix(ev.Path, index) {
			return fmt.Errorf("sync %s: %w", ev.Path, syscall.EIO)
		}
		return do()
	})
	defer restore()
	waitFor(t, "the leader's broker to fail", func() bool { return c.bs[l].Err() != nil })
	t.Logf("leader %d failed: %v", l+1, c.bs[l].Err())
	waitFor(t, "another node to serve", func() bool {
		for i, m := range c.ms {
			if i != l && m != nil && m.Serving() {
				return true
			}
		}
		return false
	})
	for i, m := range c.ms {
		if i != l && m.Serving() {
			if _, err := c.bs[i].Produce(context.Background(), "t", []broker.Message{{Value: []byte("b")}}, ""); err != nil {
				t.Fatalf("produce through the new leader %d: %v", i+1, err)
			}
		}
	}
}
