package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
)

// damageValue flips a byte of value in the commit log of dir (a message's bytes, so its
// record checksum fails) and returns the segment file it changed.
func damageValue(t *testing.T, dir string, value []byte) string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dir, "log", "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, seg := range segs {
		data, err := os.ReadFile(seg)
		if err != nil {
			t.Fatal(err)
		}
		at := bytes.Index(data, value)
		if at < 0 {
			continue
		}
		f, err := os.OpenFile(seg, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte{data[at] ^ 0xff}, int64(at)); err != nil {
			t.Fatal(err)
		}
		return seg
	}
	t.Fatalf("%q is in no segment of %s", value, dir)
	return ""
}

// TestLeaderCorruptLogStopsCleanly: the leader's commit log is damaged while it runs (a byte of
// an entry flips on its disk after the start verified the log), and a follower that was down
// needs that entry. Raft's storage may answer only "compacted" or "unavailable"; any other
// error makes raft panic, which ended the whole process with a Go panic. The member must stop
// cleanly instead: its status and its broker's Err name the segment file and the position and
// point to the runbooks, and the two others go on with the follower caught up from the new
// leader's intact log.
func TestLeaderCorruptLogStopsCleanly(t *testing.T) {
	c := newTestCluster(t)
	l := c.leader()
	if _, err := c.bs[l].CreateTopic("t", broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	f, g := (l+1)%3, (l+2)%3
	c.stop(g)
	var keys []string
	for i := range 5 {
		keys = append(keys, fmt.Sprintf("needle-%d", i))
		if _, err := c.bs[l].Produce(context.Background(), "t", []broker.Message{{Value: []byte(keys[i])}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Restarted, the two have none of the entries in memory: the leader reads what g lacks
	// from its disk.
	c.stop(l)
	c.stop(f)
	c.start(l, false)
	c.start(f, false)
	l = c.leader()
	f = 3 - l - g
	waitFor(t, "both to apply the log", func() bool {
		return c.bs[l].AppliedIndex() == c.bs[l].RaftLog().LastIndex() && c.bs[f].AppliedIndex() == c.bs[l].AppliedIndex()
	})
	seg := damageValue(t, c.dirs[l], []byte("needle-2"))
	c.start(g, false)
	select {
	case <-c.ms[l].Done():
	case <-time.After(30 * time.Second):
		t.Fatalf("leader %d still runs: it has not read its damaged entry", l+1)
	}
	why := c.ms[l].Status().Error
	t.Logf("leader %d stopped: %s", l+1, why)
	for _, want := range []string{seg, "log position", "A corrupt commit log", "replace the node"} {
		if !strings.Contains(why, want) {
			t.Fatalf("leader %d stopped with %q: it does not name %q", l+1, why, want)
		}
	}
	if err := c.bs[l].Err(); !errors.Is(err, broker.ErrStorage) || !strings.Contains(err.Error(), seg) {
		t.Fatalf("broker Err = %v, want ErrStorage naming %s", err, seg)
	}
	if _, err := c.bs[l].Produce(context.Background(), "t", []broker.Message{{Value: []byte("x")}}, ""); !errors.Is(err, broker.ErrStorage) {
		t.Fatalf("produce through the stopped leader: %v, want ErrStorage", err)
	}
	// The two others elect f, whose log is intact, and g catches up from it.
	waitFor(t, "node f to serve", func() bool { return c.ms[f].Serving() })
	keys = append(keys, "after")
	if _, err := c.bs[f].Produce(context.Background(), "t", []broker.Message{{Value: []byte("after")}}, ""); err != nil {
		t.Fatal(err)
	}
	if got := fetchAll(t, c.bs[g], "t", 0, len(keys)); fmt.Sprint(got) != fmt.Sprint(keys) {
		t.Fatalf("node %d serves %v, want %v", g+1, got, keys)
	}
}
