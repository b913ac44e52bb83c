package broker

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/imagomq/imago/internal/fsutil"
)

// decidedBehindCheckpoint opens a broker on o, appends recs as one decision batch, and moves a
// checkpoint and the durable log past that batch: the batch is durable and not replayed.
func decidedBehindCheckpoint(t *testing.T, o Options, recs ...DecisionRecord) *Broker {
	t.Helper()
	b := mustOpen(t, o)
	mustCreate(t, b, "t", 1)
	ctx := context.Background()
	if err := b.AppendDecisions(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Produce(ctx, "t", []Message{msg("a")}, ""); err != nil {
		t.Fatal(err)
	}
	if err := b.checkpoint(); err != nil { // position past the decisions' batch
		t.Fatal(err)
	}
	if _, err := b.Produce(ctx, "t", []Message{msg("b")}, ""); err != nil { // syncedPos moves on
		t.Fatal(err)
	}
	return b
}

// Retention re-writes an acknowledged decision at the head of the log, and that batch's fsync
// fails. The held map points at the new batch from the moment the flusher encodes it, but the
// only durable copy is the old batch, behind the last checkpoint (so not replayed): the
// checkpoint that Close writes must still list the decision, with the old batch's position,
// or the restart (whose fail mark cuts the new batch) has lost it.
func TestCompactionFsyncFailureKeepsDecision(t *testing.T) {
	dir := t.TempDir()
	o := manualOptions(t, dir)
	b := decidedBehindCheckpoint(t, o, DecisionRecord{Key: "g1", Value: []byte("commit")})
	f := injectSyncFaults(t, fileSyncUnder(filepath.Join(dir, "log")))
	b.compactDecisions(b.lastCkptPos.Load()) // retention's re-write of g1; its fsync fails
	f.set(nil)
	if b.Err() == nil {
		t.Fatal("the broker did not fail")
	}
	b.Close() // writes a checkpoint (as the periodic checkpointer would)

	b = mustOpen(t, o)
	defer b.Close()
	sameDecisions(t, "after restart", decisionMap(b), map[string]string{"g1": "commit"})
}

// The same without any fsync error: a power loss while the compaction batch's fdatasync is in
// progress, after a periodic checkpoint ran in that window.
func TestCompactionPowerLossKeepsDecision(t *testing.T) {
	dir := t.TempDir()
	o := manualOptions(t, dir)
	b := decidedBehindCheckpoint(t, o, DecisionRecord{Key: "g1", Value: []byte("commit")})
	f := injectSyncFaults(t, nil)
	held := f.holdNext(func(ev fsutil.Event) bool { return fileSyncUnder(filepath.Join(dir, "log"))(ev) })
	limit := b.lastCkptPos.Load()
	done := make(chan struct{})
	go func() { b.compactDecisions(limit); close(done) }()
	<-held                                 // the flusher is in fdatasync of the compaction batch
	if err := b.checkpoint(); err != nil { // the periodic checkpointer, meanwhile
		t.Fatal(err)
	}
	img := powerLossImage(t, b) // power loss now
	f.release()
	<-done
	b.Close()

	o2 := manualOptions(t, img)
	b2 := mustOpen(t, o2)
	defer b2.Close()
	sameDecisions(t, "after power loss", decisionMap(b2), map[string]string{"g1": "commit"})
}

// A record that replaces an acknowledged decision (the coordinator's final record over its
// commit) is lost to a failed fsync after a checkpoint moved past the first: the restart has
// the first value, not nothing.
func TestReplacedDecisionSurvivesFailedFsync(t *testing.T) {
	dir := t.TempDir()
	o := manualOptions(t, dir)
	b := decidedBehindCheckpoint(t, o, DecisionRecord{Key: "g1", Value: []byte("commit")}, DecisionRecord{Key: "g2", Value: []byte("abort")})
	ctx := context.Background()
	f := injectSyncFaults(t, fileSyncUnder(filepath.Join(dir, "log")))
	err := b.AppendDecisions(ctx, []DecisionRecord{{Key: "g1", Value: []byte("final")}, {Key: "g2"}})
	f.set(nil)
	if err == nil {
		t.Fatal("AppendDecisions succeeded with its fsync failing")
	}
	b.Close()

	b = mustOpen(t, o)
	defer b.Close()
	sameDecisions(t, "after restart", decisionMap(b), map[string]string{"g1": "commit", "g2": "abort"})
}

// Versions of a key stay only while needed: once a later one is durable, the earlier go, and a
// durable drop removes the key; retention's pin follows the oldest needed batch.
func TestHeldDecisionVersionsPruned(t *testing.T) {
	b := &Broker{decisions: make(map[string]heldDecision), decPending: make(map[string]struct{})}
	b.holdDecision("k", []byte("v1"), 100)
	b.holdDecision("k", []byte("v2"), 200)
	b.holdDecision("k", nil, 300)
	b.holdDecision("gone", nil, 50) // drop of a key never held: nothing
	h := b.decisions["k"]
	for _, c := range []struct {
		pos  int64
		want string
	}{{100, ""}, {101, "v1"}, {200, "v1"}, {201, "v2"}, {301, ""}} {
		v, ok := h.asOf(c.pos)
		if got := string(v.value); ok != (c.want != "") || got != c.want {
			t.Errorf("asOf(%d) = %q, %v; want %q", c.pos, got, ok, c.want)
		}
	}
	if p, ok := h.oldest(); !ok || p != 100 {
		t.Errorf("oldest = %d, %v; want 100", p, ok)
	}
	b.pruneDecisions(250) // v2 durable: v1 goes
	if h := b.decisions["k"]; len(h.earlier) != 1 || string(h.earlier[0].value) != "v2" {
		t.Fatalf("after prune(250): earlier %+v, want only v2", h.earlier)
	}
	if p, _ := b.decisions["k"].oldest(); p != 200 {
		t.Errorf("oldest after prune(250) = %d, want 200", p)
	}
	b.pruneDecisions(301) // the drop is durable: the key goes
	if _, ok := b.decisions["k"]; ok || len(b.decisions) != 0 || len(b.decPending) != 0 {
		t.Errorf("held after a durable drop: %+v (pending %v)", b.decisions, b.decPending)
	}
}
