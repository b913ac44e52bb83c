package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
)

// TestClusterSnapshotCatchUp (three processes): a follower is killed; the others go on taking
// writes while retention and compaction delete the log segments it would need; the follower
// is started again, is sent a snapshot, copies it, re-executes itself to install it (same
// process), and catches up. Then it serves, as a follower, exactly what the leader serves at
// the same offsets, every acknowledged message that retention kept is there once, and after the
// leader is killed the cluster takes writes through it.
func TestClusterSnapshotCatchUp(t *testing.T) {
	seed := clusterSeedFor(t)
	c := newTestCluster(t, seed)
	c.logExtra = ", segment_bytes: 1MiB, retention_bytes: 64KiB, index_segment_entries: 32, retention_check_interval: 200ms, checkpoint_interval: 100ms"
	c.rewriteConfigs()
	c.startAll()
	l := c.waitConverged(60 * time.Second)
	const topic, parts = "snap", 3
	r := c.newRun(topic, parts)
	f := (l + 1) % clusterSize

	type acked struct {
		id        string
		partition int
		offset    int64
	}
	var (
		mu   sync.Mutex
		acks []acked
	)
	pad := strings.Repeat("x", 4000)
	produce := func(through int, prefix string, n int) {
		t.Helper()
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := w; k < n; k += 4 {
					id, p := fmt.Sprintf("%s-%d", prefix, k), k%parts
					value := fmt.Sprintf(`{"id":%q,"pad":%q}`, id, pad)
					r.mu.Lock()
					r.values[id] = value
					r.mu.Unlock()
					body, _ := json.Marshal(api.ProduceRequest{Messages: []api.ProduceMessage{{Value: json.RawMessage(value), Partition: &p}}})
					deadline := time.Now().Add(30 * time.Second)
					for {
						ctx, cancel := context.WithTimeout(context.Background(), ceAttemptTimeout)
						a := ceDo(ctx, r.hc, http.MethodPost, r.url(through, "/v1/topics/"+topic+"/messages"), body, map[string]string{"Idempotency-Key": id})
						cancel()
						if a.status == http.StatusOK {
							var res api.ProduceResponse
							if err := json.Unmarshal(a.body, &res); err != nil || len(res.Offsets) != 1 {
								t.Errorf("produce %s: answer %s", id, a.body)
								return
							}
							mu.Lock()
							acks = append(acks, acked{id, p, res.Offsets[0].Offset})
							mu.Unlock()
							break
						}
						if (a.definite() && a.code != api.CodeNoLeader) || time.Now().After(deadline) {
							t.Errorf("produce %s through node %d: %s %s", id, through+1, a, a.body)
							return
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			}()
		}
		wg.Wait()
	}
	produce(l, "before", 60)
	st, err := c.status(f)
	if err != nil {
		t.Fatal(err)
	}
	behind := st.AppliedIndex
	c.nodes[f].kill()
	t.Logf("node %d killed at applied index %d", f+1, behind)

	// About 3 MiB through the leader: the log rolls, retention lets the old messages go, and
	// compaction deletes the segments node f would need.
	produce(l, "while-down", 800)
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, err := c.status(l)
		if err == nil && s.FirstIndex > behind+1 {
			t.Logf("the leader's log now starts at index %d", s.FirstIndex)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the leader never compacted past node %d's index %d (status %+v, %v)", f+1, behind, s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Node f comes back: snapshot, re-exec, install, catch up.
	c.start(f, false)
	deadline = time.Now().Add(90 * time.Second)
	for {
		ls, lerr := c.status(l)
		fs, ferr := c.status(f)
		if lerr == nil && ferr == nil && fs.FirstIndex > behind+1 && fs.AppliedIndex >= ls.CommitIndex && fs.Error == "" {
			t.Logf("node %d caught up: log from index %d, applied %d", f+1, fs.FirstIndex, fs.AppliedIndex)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d did not catch up by a snapshot: %+v (%v); leader %+v (%v)", f+1, fs, ferr, ls, lerr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !c.nodes[f].running() {
		t.Fatalf("node %d exited instead of restarting itself to install the snapshot", f+1)
	}
	if log, err := os.ReadFile(c.nodes[f].logPath); err != nil || !strings.Contains(string(log), "installed the snapshot staged from the leader") {
		t.Fatalf("node %d's log does not show the install (%v)", f+1, err)
	}
	segs, _ := filepath.Glob(filepath.Join(c.nodes[f].dataDir, "log", "*.log"))
	slices.Sort(segs)
	if len(segs) == 0 || filepath.Base(segs[0]) == "00000000000000000000.log" {
		t.Fatalf("node %d's log still starts at position 0: %v", f+1, segs)
	}

	// Every node serves the same retained messages at the same offsets; every acknowledged
	// message at or past its partition's start is there once, where it was acknowledged.
	check := func(when string, nodes []int, via int) {
		t.Helper()
		ref := make([]map[int64]string, parts)
		for p := 0; p < parts; p++ {
			ref[p] = readRetained(t, r, via, p, false)
		}
		for _, i := range nodes {
			for p := 0; p < parts; p++ {
				got := readRetained(t, r, i, p, true)
				if fmt.Sprint(got) != fmt.Sprint(ref[p]) {
					t.Fatalf("%s: node %d serves partition %d as %d messages, the leader %d", when, i+1, p, len(got), len(ref[p]))
				}
			}
		}
		mu.Lock()
		defer mu.Unlock()
		kept := 0
		for _, a := range acks {
			start := int64(-1)
			for o := range ref[a.partition] {
				if start < 0 || o < start {
					start = o
				}
			}
			if a.offset < start {
				continue // let go by retention
			}
			kept++
			if ref[a.partition][a.offset] != a.id {
				t.Fatalf("%s: %s acknowledged at %d/%d, stored there: %q", when, a.id, a.partition, a.offset, ref[a.partition][a.offset])
			}
		}
		seen := map[string]bool{}
		for p := range ref {
			for _, id := range ref[p] {
				if seen[id] {
					t.Fatalf("%s: %s stored twice", when, id)
				}
				seen[id] = true
			}
		}
		t.Logf("%s: %d acknowledged messages retained, all in place", when, kept)
	}
	check("after the catch-up", []int{f, (f + 1) % clusterSize}, l)

	// The leader dies; the cluster goes on with the node that installed the snapshot.
	c.nodes[l].kill()
	nl := c.waitNewLeader(l, 30*time.Second)
	produce(f, "after", 30)
	other := 3 - l - nl
	check("after the leader's death", []int{other}, nl)
}

// readRetained reads partition p from node i (as a follower read when follower) from its start
// offset to its end: offset -> message id.
func readRetained(t *testing.T, r *ceRun, i, p int, follower bool) map[int64]string {
	t.Helper()
	base := "http://" + r.c.nodes[i].httpAddr
	out := map[int64]string{}
	deadline := time.Now().Add(30 * time.Second)
	off := int64(-1)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		res, a := r.fetchOnce(ctx, base, p, max(off, 0), 200, follower)
		cancel()
		if res == nil {
			var e api.ErrorResponse
			if a.code == api.CodeOffsetOutOfRange && json.Unmarshal(a.body, &e) == nil && e.StartOffset != nil && off < 0 {
				off = *e.StartOffset
				continue
			}
			if time.Now().After(deadline) {
				t.Fatalf("read of partition %d through node %d at %d: %s %s", p, i+1, off, a, a.body)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if off < 0 {
			off = 0
		}
		ids := r.identify(p, off, res)
		for k, id := range ids {
			out[off+int64(k)] = id
		}
		off += int64(len(ids))
		if len(ids) == 0 || off >= res.EndOffset {
			return out
		}
	}
}
