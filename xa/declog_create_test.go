package xa

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/powerloss"
)

// TestNewDecisionLogSurvivesPowerLoss: a coordinator on a new directory makes the directory, the
// node-id file and the decision log's name durable before it takes decisions, so a power loss
// right after the first acknowledged decision cannot take the files with it (internal/powerloss
// drops every name and byte no sync covered: a real power loss cannot be staged on cue).
func TestNewDecisionLogSurvivesPowerLoss(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "data", "coordinator")
	rec := powerloss.New()
	restore := rec.Install()
	c, err := Open(t.Context(), Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RecoveryInterval: time.Hour})
	if err != nil {
		restore()
		t.Fatal(err)
	}
	node := c.node
	err = c.dlog.appendSync(context.Background(), sampleRecord(1))
	c.Close()
	restore()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Drop(root); err != nil {
		t.Fatal(err)
	}
	c, err = Open(t.Context(), Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RecoveryInterval: time.Hour})
	if err != nil {
		t.Fatalf("reopen after the power loss: %v", err)
	}
	defer c.Close()
	if c.node != node {
		t.Errorf("node id %s after the power loss, was %s: a new id orphans the old one's branches", c.node, node)
	}
	if _, ok := c.txs[sampleRecord(1).Gtrid]; !ok {
		t.Errorf("the acknowledged decision for %s is gone after the power loss", sampleRecord(1).Gtrid)
	}
}
