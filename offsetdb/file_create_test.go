package offsetdb

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/imagomq/imago/internal/powerloss"
)

// TestFileStoreNewLogSurvivesPowerLoss: a file store on a new directory makes the directory and
// the offset log's name durable before the first commit is acknowledged, so a power loss right
// after it cannot take the file with the acknowledged offset (internal/powerloss drops every
// name and byte no sync covered: a real power loss cannot be staged on cue).
func TestFileStoreNewLogSurvivesPowerLoss(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "data", "offsets")
	rec := powerloss.New()
	restore := rec.Install()
	s := openFileT(t, dir)
	err := s.Commit(context.Background(), []Offset{{Group: "g", Topic: "t", Partition: 0, Next: 7}})
	s.Close()
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if loss, err := rec.Drop(root); err != nil {
		t.Fatal(err)
	} else if len(loss.Removed) > 0 {
		t.Logf("power loss removed %v", loss.Removed)
	}
	s = openFileT(t, dir)
	defer s.Close()
	if o := mustGet(t, s, "g", "t", 0); o.Next != 7 {
		t.Fatalf("offset after the power loss: %d, acknowledged 7", o.Next)
	}
}
