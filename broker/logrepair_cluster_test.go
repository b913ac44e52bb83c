package broker

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestDropCorruptBatchRefusesClusterMember: a cluster member's log is never repaired in place
// (a gap no other node has, and a log the replicated broker refuses to open); the refusal points
// to replacing the node, and the log is left as it was.
func TestDropCorruptBatchRefusesClusterMember(t *testing.T) {
	dir := t.TempDir()
	o := manualOptions(t, dir)
	o.Replicated = true
	b := mustOpen(t, o)
	b.SetProposer(&loopProposer{b: b, term: 1})
	if _, err := b.CreateTopic("t", TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	ends := produceN(t, b, 6)
	b.Close()
	seg := lastSegment(t, dir)
	overwrite(t, seg, ends[2]+raftHeaderSize+recordHeaderSize, []byte{'X'})
	v, err := VerifyLog(dir)
	if err != nil || v.Corruption == nil || v.Corruption.Position != ends[2] {
		t.Fatalf("verify: %+v %v", v.Corruption, err)
	}
	before, _ := os.ReadFile(seg)
	_, err = DropCorruptBatch(dir, ends[2], nil)
	if err == nil || !strings.Contains(err.Error(), "cluster member") || !strings.Contains(err.Error(), "Runbook: replace a node") {
		t.Fatalf("repair of a cluster member's log: %v, want a refusal pointing to replacing the node", err)
	}
	after, _ := os.ReadFile(seg)
	if !bytes.Equal(before, after) {
		t.Fatal("the refused repair changed the segment")
	}
	if v, err := VerifyLog(dir); err != nil || v.Corruption == nil || v.Corruption.Position != ends[2] {
		t.Fatalf("verify after the refusal: %+v %v", v.Corruption, err)
	}
	if _, err := os.Stat(dir + "/repair"); !os.IsNotExist(err) {
		t.Fatalf("the refused repair created repair/: %v", err)
	}
}
