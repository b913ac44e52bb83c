package broker

import (
	"context"
	"path/filepath"
	"testing"
)

// XARecover lists the branches a transaction manager may have to finish: prepared (their
// commit or rollback in flight included) and heuristically completed ones. A one-phase commit
// in flight was never prepared: a manager recovering meanwhile must not see it, or it would
// roll back an xid it never prepared and get XAER_PROTO.
func TestXARecoverListsPreparedOnly(t *testing.T) {
	dir := t.TempDir()
	b := mustOpen(t, manualOptions(t, dir))
	defer b.Close()
	mustCreate(t, b, "a", 1)
	ctx := context.Background()
	prepared, onePhase := xid(1), xid(2)
	for _, x := range []Xid{prepared, onePhase} {
		if err := b.XAStart(x, XANoFlags, 0); err != nil {
			t.Fatal(err)
		}
		if err := b.XAAdd(x, txMsgs("a", "m")); err != nil {
			t.Fatal(err)
		}
		if err := b.XAEnd(x, XASuccess); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.XAPrepare(ctx, prepared); err != nil {
		t.Fatal(err)
	}
	f := injectSyncFaults(t, nil)
	held := f.holdNext(fileSyncUnder(filepath.Join(dir, "log")))
	done := make(chan error, 1)
	go func() { _, err := b.XACommit(ctx, onePhase, true); done <- err }()
	<-held // the one-phase commit's batch is being fsync'd: the branch is committing
	if st, _ := b.XAState(onePhase); st != TxCommitting {
		t.Fatalf("one-phase branch is %s while its commit is in flight, want committing", st)
	}
	got := b.XARecover()
	f.release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].String() != prepared.String() {
		t.Errorf("XARecover during a one-phase commit = %v, want only the prepared %v", got, prepared)
	}
}
