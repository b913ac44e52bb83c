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
	topics := filepath.Join(c.dirs[f], "topics")
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if strings.HasPrefix(ev.Path, topics) {
			return fmt.Errorf("sync %s: %w", ev.Path, syscall.EIO)
		}
		return do()
	})
	defer restore()
	if _, err := c.bs[l].CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.ms[f].Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("node %d still runs after its apply failed", f+1)
	}
	t.Logf("node %d stopped: %s", f+1, c.ms[f].Status().Error)
	select {
	case <-c.bs[f].Failed():
	default:
		t.Fatalf("node %d's raft node stopped on %q, but its broker's Failed is not closed (Err %v)", f+1, c.ms[f].Status().Error, c.bs[f].Err())
	}
	err := c.bs[f].Err()
	if !errors.Is(err, broker.ErrStorage) || !strings.Contains(err.Error(), "apply raft entry") || !strings.Contains(err.Error(), syscall.EIO.Error()) {
		t.Fatalf("broker Err = %v, want ErrStorage naming the entry and the failure", err)
	}
	if _, err := c.bs[f].Produce(context.Background(), "a", []broker.Message{{Value: []byte("a")}}, ""); !errors.Is(err, broker.ErrStorage) {
		t.Fatalf("produce through the failed node: %v, want ErrStorage", err)
	}
	restore()
	// The two others go on.
	l = c.leader()
	if _, err := c.bs[l].Produce(context.Background(), "t", []broker.Message{{Value: []byte("b")}}, ""); err != nil {
		t.Fatalf("produce through leader %d: %v", l+1, err)
	}
}
