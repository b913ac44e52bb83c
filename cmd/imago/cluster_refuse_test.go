package main

// Acceptance 3's refusals: a follower whose data directory was wiped, or whose log is damaged
// below its end, must not start (a wiped node could vote twice in a term; a damaged one could
// lead with a log that lost committed entries). The operator replaces it under a new node id;
// meanwhile the other two go on.

import (
	"context"
	"math/rand"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// expectRefusal starts node i on its data directory and expects it to exit non-zero before it
// is ready, logging want; the node is then out of the cluster for good.
func (c *testCluster) expectRefusal(i int, want string) {
	c.t.Helper()
	n := c.nodes[i]
	if err := n.launch(false); err != nil {
		c.t.Fatal(err)
	}
	ready := filepath.Join(n.dir, "ready")
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-n.exited:
			if n.waitErr == nil {
				c.t.Errorf("node %d exited 0 on a data directory it must refuse", n.id)
			}
			if log := tail(n.logPath, 20); !strings.Contains(log, want) {
				c.t.Errorf("node %d refused to start, but its log does not say %q:\n%s", n.id, want, log)
			}
			c.gone[i] = true
			return
		case <-time.After(10 * time.Millisecond):
		}
		if _, err := os.Stat(ready); err == nil {
			c.t.Fatalf("node %d started on a data directory it must refuse; log:\n%s", n.id, tail(n.logPath, 20))
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("node %d neither refused nor started within 30s", n.id)
		}
	}
}

// goesOnWithTwo checks that writes succeed through each of the two remaining nodes.
func (c *testCluster) goesOnWithTwo(r *ceRun, rng *rand.Rand) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range c.nodes {
		if c.gone[i] {
			continue
		}
		if r.probe(ctx, 200+i, 0, i, rng).IsZero() {
			c.t.Errorf("no write succeeded through node %d within 20s with one node gone", i+1)
		}
	}
}

func TestClusterWipedFollower(t *testing.T) {
	c, r, seed := startCluster(t, "e2e-wiped", 4)
	l := c.waitConverged(60 * time.Second)
	loadFor(500 * time.Millisecond)
	f := (l + 1) % clusterSize
	c.nodes[f].kill()
	if err := os.RemoveAll(c.nodes[f].dataDir); err != nil {
		t.Fatal(err)
	}
	c.expectRefusal(f, "new node id")
	c.goesOnWithTwo(r, rand.New(rand.NewSource(seed)))
	r.finish(seed)
}

var segmentFile = regexp.MustCompile(`^[0-9]{20}\.log$`)

func TestClusterCorruptFollower(t *testing.T) {
	c, r, seed := startCluster(t, "e2e-corrupt", 4)
	l := c.waitConverged(60 * time.Second)
	loadFor(1500 * time.Millisecond)
	f := (l + 1) % clusterSize
	c.nodes[f].kill()
	// One byte flipped in the last segment, a little before its end: written after the last
	// checkpoint (one second at most, under load), with valid batches after it.
	dir := filepath.Join(c.nodes[f].dataDir, "log")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, e := range ents {
		if segmentFile.MatchString(e.Name()) {
			segs = append(segs, e.Name())
		}
	}
	if len(segs) == 0 {
		t.Fatalf("no log segment in %s", dir)
	}
	sort.Strings(segs)
	path := filepath.Join(dir, segs[len(segs)-1])
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := len(b) - 1500
	if at < len(b)/2 {
		at = len(b) / 2
	}
	b[at] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("node %d: flipped a byte at %d of %s (%d bytes)", f+1, at, path, len(b))
	c.expectRefusal(f, "corrupt")
	c.goesOnWithTwo(r, rand.New(rand.NewSource(seed)))
	r.finish(seed)
}
