package replica

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Snapshots in the simulation: a node sent a snapshot copies the files straight from the
// source node's broker (no transport: the simulation has none), stops, and is restarted
// cleanly by reap; its start installs what it staged (InstallStaged, as serve does). A copy
// whose source went down, or whose disk lost power, is abandoned: the next start deletes the
// staging directory and the node is sent a snapshot again.

// simPeers are the members' addresses as a snapshot carries them (the simulation never dials).
var simPeers = []Peer{{ID: 1, RaftAddr: "sim:1"}, {ID: 2, RaftAddr: "sim:2"}, {ID: 3, RaftAddr: "sim:3"}}

// fetchSnapshotFile copies file name of the snapshot at index from node src's broker.
func (s *sim) fetchSnapshotFile(_ context.Context, src, index uint64, name string, w io.Writer) (int64, error) {
	if src < 1 || int(src) >= len(s.nodes) {
		return 0, errSimSourceDown
	}
	nd := s.nodes[src]
	if nd.b == nil || nd.halted {
		return 0, errSimSourceDown
	}
	r, _, err := nd.b.OpenSnapshotFile(index, name)
	if err != nil {
		return 0, errors.Join(errSimSourceDown, err) // a newer snapshot replaced it, or the node restarted
	}
	defer r.Close()
	return io.Copy(w, r)
}

// installStaged installs what nd staged before it stopped, and moves the commit-log images the
// staging syncs recorded to the names the segments have once installed.
func (s *sim) installStaged(nd *simNode) {
	_, err := os.Stat(filepath.Join(nd.dir, installMarkerName))
	marked := err == nil
	if err := InstallStaged(nd.dir, quietLogger()); err != nil {
		s.fatalf("node %d: install a staged snapshot: %v", nd.id, err)
	}
	staging := filepath.Join(nd.dir, stagingDirName) + string(filepath.Separator)
	logDir := filepath.Join(nd.dir, "log") + string(filepath.Separator)
	s.diskMu.Lock()
	defer s.diskMu.Unlock()
	if marked {
		for path := range s.images {
			if strings.HasPrefix(path, logDir) {
				delete(s.images, path) // the old log is gone
			}
		}
	}
	for path, img := range s.images {
		if !strings.HasPrefix(path, staging) {
			continue
		}
		delete(s.images, path)
		if marked {
			s.images[filepath.Join(nd.dir, strings.TrimPrefix(path, staging))] = img
		}
	}
	if marked {
		s.snapshots++
		s.logf("node %d installs a snapshot", nd.id)
	}
}

// compaction is nd's raft compaction point as its disk holds it (0: never compacted).
func (s *sim) compaction(nd *simNode) uint64 {
	data, err := os.ReadFile(filepath.Join(nd.dir, "raft-compacted"))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		s.fatalf("node %d: %v", nd.id, err)
	}
	var c struct {
		Index uint64 `json:"index"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		s.fatalf("node %d: raft-compacted: %v", nd.id, err)
	}
	return c.Index
}

// compact checkpoints one live node and compacts its raft log, on the simulation's goroutine
// (the brokers' own checkpointer and retention pass do not run: they would make a run
// unrepeatable). A sync that loses power stops the node like any other.
func (s *sim) compact() {
	l := s.live()
	if len(l) == 0 {
		return
	}
	nd := l[s.rng.IntN(len(l))]
	err := nd.b.Checkpoint()
	if err == nil {
		var freed int64
		if freed, err = nd.b.CompactLog(); err == nil && freed > 0 {
			s.compactions++
			s.logf("node %d compacts its log through index %d", nd.id, nd.b.RaftLog().FirstIndex()-1)
		}
	}
	if err != nil {
		nd.node.Halt(errSimCrash)
		s.stopped(nd, err) // fails the run unless the node's power went in that sync
	}
}

var simSnapSeeds = flag.Int("replica.snapseeds", 0, "number of seeds TestSimReplicatedSnapshots runs (default 40, 10 with -short)")

// TestSimReplicatedSnapshots runs the simulation with nodes that stay down long and frequent
// retention passes, so that the others compact past them and they catch up by snapshots, under
// the same faults and invariants as TestSimReplicated. It fails if no seed installed one.
func TestSimReplicatedSnapshots(t *testing.T) {
	seeds := *simSnapSeeds
	if seeds == 0 {
		seeds = 40
		if testing.Short() {
			seeds = 10
		}
	}
	var snaps, comps, ran int
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			runSimWith(t, seed, simShape{downtime: 400, retain: 0.25, segmentBytes: 512})
			snaps += lastSim.snapshots
			comps += lastSim.compactions
			ran++
		})
	}
	t.Logf("%d seeds: %d log compactions, %d snapshots installed", ran, comps, snaps)
	if snaps == 0 && ran >= 10 && !t.Failed() {
		t.Fatal("no seed installed a snapshot: the shape no longer exercises catch-up by snapshot")
	}
}
