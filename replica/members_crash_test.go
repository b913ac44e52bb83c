package replica

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
)

// A membership change is recorded twice on a member: the new member's address in the members
// file, and the change's index (ConfIndex) in raft-state, after which a restart skips the
// change. Whichever of the two writes a crash cuts off, the restarted member must know the
// new member both as raft counts it and by its address. Each case makes one of the two
// writes fail on a follower (a directory stands where the file is renamed to, which stops the
// member on the spot, as a crash would), then restarts the follower with the file back.
func TestMembershipChangeSurvivesACrashBetweenItsRecords(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string // the write that fails
		// fileHasNode4 is what the members file must say when the member stopped: written
		// first, so it has node 4 even when raft-state could not be written.
		fileHasNode4 bool
	}{
		{name: "members file write fails", file: membersFileName, fileHasNode4: false},
		{name: "raft-state write fails", file: "raft-state", fileHasNode4: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestCluster(t)
			l := c.leader()
			f := (l + 1) % 3
			path := filepath.Join(c.dirs[f], tc.file)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
			m := c.ms[f]
			p4 := Peer{ID: 4, RaftAddr: testenv.FreeAddr(t), HTTPAddr: "127.0.0.1:18084"}
			if err := c.ms[l].AddMember(context.Background(), p4); err != nil {
				t.Fatal(err)
			}
			// The follower either stops (the change is not recorded) or, wrongly, records the
			// change in raft-state although the members file could not be written.
			stopped := func() bool {
				select {
				case <-m.Done():
					return true
				default:
					return false
				}
			}
			waitFor(t, "the follower to stop or apply the change", func() bool {
				return stopped() || slices.Contains(m.node.Status().Learners, 4)
			})
			if !stopped() {
				t.Fatalf("node %d applied the change (learners %v) although %s could not be written: raft-state records it, the members file does not", f+1, m.node.Status().Learners, tc.file)
			}
			c.stop(f)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, before, 0o644); err != nil {
				t.Fatal(err)
			}
			if got := membersFileHas(t, c.dirs[f], 4); got != tc.fileHasNode4 {
				t.Fatalf("after the failed %s write the members file has node 4: %v, want %v", tc.file, got, tc.fileHasNode4)
			}

			c.start(f, false)
			waitFor(t, "the restarted follower to apply the change again", func() bool {
				return slices.Contains(c.ms[f].node.Status().Learners, 4)
			})
			if got, ok := c.ms[f].members.get(4); !ok || got != p4 {
				t.Fatalf("node %d restarted with learner 4 but knows it as %+v (known %v), want %+v", f+1, got, ok, p4)
			}
			if !membersFileHas(t, c.dirs[f], 4) {
				t.Fatalf("node %d's members file lacks node 4 after the change was applied again", f+1)
			}
			// A later restart skips the change (ConfIndex covers it) and reads the address from
			// the file.
			c.stop(f)
			c.start(f, false)
			if _, ok := c.ms[f].members.get(4); !ok {
				t.Fatalf("node %d lost node 4's address at its second restart", f+1)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.ms[c.leader()].ReadBarrier(ctx); err != nil {
				t.Fatalf("the cluster after the restarts: %v", err)
			}
		})
	}
}

// membersFileHas reports whether the members file in dir lists id once.
func membersFileHas(t *testing.T, dir string, id uint64) bool {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, membersFileName))
	if err != nil {
		t.Fatal(err)
	}
	var f membersFile
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range f.Members {
		if p.ID == id {
			n++
		}
	}
	if n > 1 {
		t.Fatalf("%s lists node %d %d times", membersFileName, id, n)
	}
	return n == 1
}
