package broker

import (
	"context"
	"testing"
)

// TestDroppedPrepareIsHeuristicRollback: the corrupt batch an operator drops is the prepare
// batch of a branch the transaction manager was told is prepared (the checkpoint lists it). Its
// messages are gone, so the broker cannot commit it; but answering the manager's commit with
// XAER_NOTA ("no such branch", which managers read as "already committed") would leave the
// global transaction half committed without anybody knowing. The branch must come back as
// heuristically rolled back: the commit gets XA_HEURRB, a heuristic outcome the manager reports.
func TestDroppedPrepareIsHeuristicRollback(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b := mustOpen(t, testOptions(t, dir))
	mustCreate(t, b, "t", 2)
	produceN(t, b, 1)
	x, z := xid(1), xid(2)
	prepareBranch(t, b, x, "t", "pay-1", "pay-2")
	prepareBranch(t, b, z, "t", "z-1")
	b.txMu.Lock()
	xPos, zPos := b.txs[x.String()].preparePos, b.txs[z.String()].preparePos
	b.txMu.Unlock()
	produceN(t, b, 1)
	if err := b.checkpoint(); err != nil { // lists x and z as prepared
		t.Fatal(err)
	}
	// z is committed after the checkpoint: its commit batch carries its messages, so losing its
	// prepare batch loses nothing.
	if _, err := b.XACommit(ctx, z, false); err != nil {
		t.Fatal(err)
	}
	produceN(t, b, 1)
	b.abandon()
	for _, pos := range []int64{xPos, zPos} {
		overwrite(t, lastSegment(t, dir), pos+batchHeaderSize+recordHeaderSize+8, []byte{0xff}) // its control record
		if _, err := DropCorruptBatch(dir, pos, nil); err != nil {
			t.Fatal(err)
		}
	}

	b = mustOpen(t, testOptions(t, dir))
	defer func() { b.Close() }()
	if _, err := b.XACommit(ctx, z, false); xaCode(err) != XAERNota {
		t.Fatalf("commit of the branch committed before the drop: %s, want %s", xaCode(err), XAERNota)
	}
	if _, err := b.XACommit(ctx, x, false); xaCode(err) != XAHeurRB {
		t.Fatalf("commit of the branch whose prepare batch was dropped: %s, want %s", xaCode(err), XAHeurRB)
	}
	b.Close()
	b = mustOpen(t, testOptions(t, dir)) // still known after a restart
	if _, err := b.XACommit(ctx, x, false); xaCode(err) != XAHeurRB {
		t.Fatalf("after a restart: %s, want %s", xaCode(err), XAHeurRB)
	}
}
