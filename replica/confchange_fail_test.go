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
			path := filepath.Join(c.dirs[f], file)
			restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
				if strings.HasPrefix(ev.Path, path) {
					return fmt.Errorf("sync %s: %w", ev.Path, syscall.EIO)
				}
				return do()
			})
			defer restore()
			p4 := Peer{ID: 4, RaftAddr: testenv.FreeAddr(t), HTTPAddr: "127.0.0.1:18084"}
			if err := c.ms[l].AddMember(context.Background(), p4); err != nil {
				t.Fatal(err)
			}
			select {
			case <-c.ms[f].Done():
			case <-time.After(30 * time.Second):
				t.Fatalf("node %d still runs after its membership change failed to apply", f+1)
			}
			why := c.ms[f].Status().Error
			t.Logf("node %d stopped: %s", f+1, why)
			if !strings.Contains(why, "membership change") {
				t.Fatalf("node %d stopped on %q, not on the membership change", f+1, why)
			}
			select {
			case <-c.bs[f].Failed():
			default:
				t.Fatalf("node %d's raft node stopped on %q, but its broker's Failed is not closed (Err %v)", f+1, why, c.bs[f].Err())
			}
			err := c.bs[f].Err()
			if !errors.Is(err, broker.ErrStorage) || !strings.Contains(err.Error(), "membership change") || !strings.Contains(err.Error(), syscall.EIO.Error()) {
				t.Fatalf("broker Err = %v, want ErrStorage naming the entry and the failure", err)
			}
			if _, err := c.bs[f].Produce(context.Background(), "a", []broker.Message{{Value: []byte("a")}}, ""); !errors.Is(err, broker.ErrStorage) {
				t.Fatalf("produce through the failed node: %v, want ErrStorage", err)
			}
			restore()
			// The two others go on.
			l = c.leader()
			if _, err := c.bs[l].Produce(context.Background(), "a", []broker.Message{{Value: []byte("b")}}, ""); err != nil {
				t.Fatalf("produce through leader %d: %v", l+1, err)
			}
		})
	}
}
