package replica

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/tmpfs"
)

// One member's disk fills up while the two others are fine. Each member's data directory is on
// a tmpfs of its own (internal/tmpfs, root only), so one of them can be made to run out of
// space while the cluster runs.

// newClusterOnTmpfs starts three members, each on a tmpfs of its own, and returns the mounts.
func newClusterOnTmpfs(t *testing.T) (*testCluster, []string) {
	var mnts, dirs []string
	for range 3 {
		mnt := tmpfs.Mount(t, "16m")
		mnts = append(mnts, mnt)
		dirs = append(dirs, filepath.Join(mnt, "node"))
	}
	// Its cleanup is registered after the mounts', so it stops the members before they are
	// unmounted. An election timeout of 500 ms: a leader change the test did not cause (a
	// stalled machine) would let the full member go on with nothing to write.
	return newClusterIn(t, dirs, nil, 50), mnts
}

// fillUp writes a file into mnt until its file system is full, and returns a function that
// deletes it. The members write meanwhile, so it writes until ENOSPC instead of computing
// the free space first.
func fillUp(t *testing.T, mnt string) (free func()) {
	t.Helper()
	path := filepath.Join(mnt, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err = f.Write(chunk); err != nil {
			break
		}
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		os.Remove(path)
		t.Fatalf("fill %s: %v", mnt, err)
	}
	return func() {
		t.Helper()
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// bigValue is key followed by 32 KiB of padding: more than the unused end of a file's last
// page, which a full tmpfs still takes.
func bigValue(key string) []byte {
	return []byte(key + strings.Repeat(".", 32<<10))
}

// produceKeyed produces one message (bigValue(key)) through the serving leader, retrying with
// the same key while the answer is one a client retries on.
func (c *testCluster) produceKeyed(topic, key string) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := c.leader()
		_, err := c.bs[l].Produce(context.Background(), topic, []broker.Message{{Value: bigValue(key)}}, key)
		if err == nil {
			return
		}
		if !errors.Is(err, broker.ErrOutcomeUnknown) && !errors.Is(err, broker.ErrNotLeader) &&
			!errors.Is(err, broker.ErrStorage) && !errors.Is(err, broker.ErrClosed) {
			c.t.Fatalf("produce %s through node %d: %v", key, l+1, err)
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("produce %s: still failing after 30 s: %v", key, err)
		}
	}
}

// stoppedForSpace waits for member i to stop, and checks it says it ran out of space.
func (c *testCluster) stoppedForSpace(i int) {
	c.t.Helper()
	select {
	case <-c.ms[i].Done():
	case <-time.After(30 * time.Second):
		c.t.Fatalf("node %d still runs on a full disk", i+1)
	}
	if why := c.ms[i].Status().Error; !strings.Contains(why, syscall.ENOSPC.Error()) {
		c.t.Fatalf("node %d stopped with %q, want an error naming the full disk", i+1, why)
	}
}

// sameKeys checks that every member serves exactly keys (their bigValue), once each, in order.
func (c *testCluster) sameKeys(topic string, keys []string) {
	c.t.Helper()
	for i, b := range c.bs {
		got := fetchAll(c.t, b, topic, 0, len(keys))
		for j, v := range got {
			got[j] = strings.TrimRight(v, ".")
		}
		if fmt.Sprint(got) != fmt.Sprint(keys) {
			c.t.Fatalf("node %d serves %v, want %v", i+1, got, keys)
		}
	}
}

// TestLeaderDiskFullStepsAside: the leader's disk fills up while one follower is down, so that
// the leader's own disk is needed for a majority. The leader must not acknowledge a write its
// disk did not take: the write fails, the member stops naming the full disk. Once the other
// follower is back the two elect a leader, and a retry with the key stores the write once.
// With space back the old leader restarts and serves the same log.
func TestLeaderDiskFullStepsAside(t *testing.T) {
	c, mnts := newClusterOnTmpfs(t)
	l := c.leader()
	if _, err := c.bs[l].CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	keys := []string{"k0", "k1"}
	c.produceKeyed("t", "k0") // the partition's index file is allocated before the disk fills
	f, g := (l+1)%3, (l+2)%3
	waitFor(t, "the followers to apply k0", func() bool {
		return c.bs[f].AppliedIndex() == c.bs[l].AppliedIndex() && c.bs[g].AppliedIndex() == c.bs[l].AppliedIndex()
	})
	c.stop(g)
	free := fillUp(t, mnts[l])
	res, err := c.bs[l].Produce(context.Background(), "t", []broker.Message{{Value: bigValue("k1")}}, "k1")
	if err == nil {
		t.Fatalf("the leader acknowledged k1 (%+v) with its disk full and one follower down", res)
	}
	t.Logf("produce through the leader with its disk full: %v", err)
	c.start(g, false)
	c.produceKeyed("t", "k1")
	for i := 2; i <= 10; i++ {
		keys = append(keys, fmt.Sprintf("k%d", i))
		c.produceKeyed("t", keys[i])
	}
	c.stoppedForSpace(l)
	c.stop(l)
	free()
	c.start(l, false)
	c.sameKeys("t", keys)
}

// TestFollowerDiskFullCatchesUpOnceSpaceIsBack: a follower's disk fills up while the other
// follower is down, so that the full one is needed for a majority. It must not acknowledge
// what its disk did not take: it stops naming the full disk and the write waits. Once the other
// follower is back the write commits and the two go on. Started again on the full disk the
// follower refuses or stops again; with space back it catches up and serves the same log.
func TestFollowerDiskFullCatchesUpOnceSpaceIsBack(t *testing.T) {
	c, mnts := newClusterOnTmpfs(t)
	l := c.leader()
	if _, err := c.bs[l].CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	keys := []string{"k0", "k1"}
	c.produceKeyed("t", "k0")
	f, g := (l+1)%3, (l+2)%3
	waitFor(t, "the followers to apply k0", func() bool {
		return c.bs[f].AppliedIndex() == c.bs[l].AppliedIndex() && c.bs[g].AppliedIndex() == c.bs[l].AppliedIndex()
	})
	c.stop(g)
	free := fillUp(t, mnts[f])
	before := c.bs[l].RaftLog().LastIndex()
	produced := make(chan error, 1)
	go func() {
		_, err := c.bs[l].Produce(context.Background(), "t", []broker.Message{{Value: bigValue("k1")}}, "k1")
		produced <- err
	}()
	c.stoppedForSpace(f)
	// The full follower stopped without acknowledging k1: the leader's disk holds the only copy.
	waitFor(t, "the leader to append k1", func() bool { return c.bs[l].RaftLog().LastIndex() > before })
	for _, n := range c.ms[l].Status().Nodes {
		if n.ID == uint64(f+1) && n.MatchIndex > before {
			t.Fatalf("the leader counts the full follower's disk up to %d; before k1 the log ended at %d", n.MatchIndex, before)
		}
	}
	answered := false
	select {
	case err := <-produced:
		if err == nil {
			t.Fatal("k1 acknowledged with one copy on disk")
		}
		answered = true // not stored, or fate unknown (leadership moved): retried below
	default:
	}
	c.start(g, false)
	if !answered {
		<-produced
	}
	c.produceKeyed("t", "k1") // stores k1 once: a duplicate if it committed
	for i := 2; i <= 10; i++ {
		keys = append(keys, fmt.Sprintf("k%d", i))
		c.produceKeyed("t", keys[i])
	}
	c.stop(f)
	if err := c.tryStart(f, false); err != nil {
		if !strings.Contains(err.Error(), syscall.ENOSPC.Error()) {
			t.Fatalf("start on a full disk: %v, want an error naming the full disk", err)
		}
	} else {
		c.stoppedForSpace(f)
		c.stop(f)
	}
	free()
	c.start(f, false)
	c.sameKeys("t", keys)
}
