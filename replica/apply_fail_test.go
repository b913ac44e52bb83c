package replica

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/fsutil"
)

// TestFollowerApplyFailureFailsBroker: applying a committed entry fails on one follower (here
// the fsync of topics.json while it applies a topic's creation, after an earlier topic was applied). Its raft node stops; the
// broker must say so too: a program that embeds the library, or a health check that asks the
// broker, must not see a healthy broker whose memory may hold a half-applied entry. Err names
// the entry, Failed is closed, and every later write through it is refused with ErrStorage.
// The failure is injected with the fsync hook: a real disk does not fail one file's fsync on
// cue (a full tmpfs fails the log write first, which already failed the broker).
func TestFollowerApplyFailureFailsBroker(t *testing.T) {
	c := newTestCluster(t)
	l := c.leader()
	f := (l + 1) % 3
	if _, err := c.bs[l].CreateTopic("a", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the follower to apply the topic", func() bool { return c.bs[f].AppliedIndex() == c.bs[l].AppliedIndex() })
	restore := failSyncs(filepath.Join(c.dirs[f], "topics"))
	defer restore()
	if _, err := c.bs[l].CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	expectBrokerFailed(t, c, f, "", "apply raft entry", restore)
}

// failSyncs makes every fsync of a path that starts with prefix fail with EIO, until restore
// (the fsync hook: a real disk does not fail one file's fsync on cue).
func failSyncs(prefix string) (restore func()) {
	return fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if strings.HasPrefix(ev.Path, prefix) {
			return fmt.Errorf("sync %s: %w", ev.Path, syscall.EIO)
		}
		return do()
	})
}

// expectBrokerFailed waits for node f's raft node to stop (on a reason naming stopped, unless
// empty) and checks that its broker failed with it: Failed closed, Err an ErrStorage naming
// what and the EIO, a produce refused. Then, with the fault restored, the leader of the two
// others still takes a write.
func expectBrokerFailed(t *testing.T, c *testCluster, f int, stopped, what string, restore func()) {
	t.Helper()
	select {
	case <-c.ms[f].Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("node %d still runs after its apply failed", f+1)
	}
	why := c.ms[f].Status().Error
	t.Logf("node %d stopped: %s", f+1, why)
	if !strings.Contains(why, stopped) {
		t.Fatalf("node %d stopped on %q, not on %q", f+1, why, stopped)
	}
	select {
	case <-c.bs[f].Failed():
	default:
		t.Fatalf("node %d's raft node stopped on %q, but its broker's Failed is not closed (Err %v)", f+1, why, c.bs[f].Err())
	}
	err := c.bs[f].Err()
	if !errors.Is(err, broker.ErrStorage) || !strings.Contains(err.Error(), what) || !strings.Contains(err.Error(), syscall.EIO.Error()) {
		t.Fatalf("broker Err = %v, want ErrStorage naming the entry (%q) and the failure", err, what)
	}
	if _, err := c.bs[f].Produce(context.Background(), "a", []broker.Message{{Value: []byte("a")}}, ""); !errors.Is(err, broker.ErrStorage) {
		t.Fatalf("produce through the failed node: %v, want ErrStorage", err)
	}
	restore()
	l := c.leader()
	if _, err := c.bs[l].Produce(context.Background(), "a", []broker.Message{{Value: []byte("b")}}, ""); err != nil {
		t.Fatalf("produce through leader %d: %v", l+1, err)
	}
}
