package broker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDroppedDecisionIsHeuristicRollback: the corrupt batch an operator drops is the commit
// record of a branch committed before the last checkpoint (which therefore does not list it),
// while its prepare batch is still in the log. Brought back prepared, the transaction manager's
// commit would append its messages again at new offsets; it must come back heuristically
// rolled back instead (XA_HEURRB), across restarts and full rebuilds, and nothing is appended.
func TestDroppedDecisionIsHeuristicRollback(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b := mustOpen(t, manualOptions(t, dir))
	mustCreate(t, b, "t", 2)
	produceN(t, b, 1)
	x := xid(1)
	prepareBranch(t, b, x, "t", "pay-1", "pay-2")
	before := b.log.end.Load()
	if _, err := b.XACommit(ctx, x, false); err != nil {
		t.Fatal(err)
	}
	after := b.log.end.Load()
	produceN(t, b, 1)
	b.Close() // checkpoints after the commit: the branch is not listed
	overwrite(t, lastSegment(t, dir), after-1, []byte{0xfe})
	rep, err := DropCorruptBatch(dir, before, nil)
	if err != nil {
		t.Fatal(err)
	}
	report := strings.Join(rep.Dropped, "\n")
	for _, want := range []string{"the commit record of " + x.String(), "it was decided before the checkpoint"} {
		if !strings.Contains(report, want) {
			t.Fatalf("report:\n%s\nwants %q", report, want)
		}
	}
	check := func(when string) {
		t.Helper()
		if st, ok := b.XAState(x); !ok || st != TxHeurRolledBack {
			t.Fatalf("%s: branch state %v %v, want %s", when, st, ok, TxHeurRolledBack)
		}
		if _, err := b.XACommit(ctx, x, false); xaCode(err) != XAHeurRB {
			t.Fatalf("%s: commit: %s (%v), want %s", when, xaCode(err), err, XAHeurRB)
		}
		p0, p1 := fmt.Sprint(values(fetchAll(t, b, "t", 0))), fmt.Sprint(values(fetchAll(t, b, "t", 1)))
		if p0 != "[v0 v0]" || p1 != "[]" {
			t.Fatalf("%s: partition 0 %s, partition 1 %s: want [v0 v0] and [] (the dropped commit's messages lost, never appended again)", when, p0, p1)
		}
	}
	b = mustOpen(t, manualOptions(t, dir))
	check("after the drop")
	b.Close()
	b = mustOpen(t, manualOptions(t, dir))
	check("after a restart")
	b.Close()
	if err := os.RemoveAll(filepath.Join(dir, "index")); err != nil {
		t.Fatal(err)
	}
	b = mustOpen(t, manualOptions(t, dir))
	defer b.Close()
	check("after a full rebuild with the checkpoint listing it")
}
