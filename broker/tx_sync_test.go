package broker

import (
	"context"
	"testing"
	"time"
)

// TestTransactionRecordsAlwaysSynced: under fsync interval or never, XA prepare and commit (and
// a local transaction's commit) must still be durable when they return. A transaction manager
// that hears "prepared" may commit the other resources; if the prepare then vanishes in an OS
// crash, the coordinator counts the missing branch as committed and the message is lost.
func TestTransactionRecordsAlwaysSynced(t *testing.T) {
	for _, pol := range []FsyncPolicy{{Mode: FsyncInterval, Interval: time.Hour}, {Mode: FsyncNever}} {
		t.Run(pol.String(), func(t *testing.T) {
			o := testOptions(t, t.TempDir())
			o.Fsync = pol
			o.CheckpointInterval = time.Hour
			b := mustOpen(t, o)
			defer b.Close()
			mustCreate(t, b, "t", 1)
			durable := func(what string) {
				t.Helper()
				if d, e := b.log.durable.Load(), b.log.end.Load(); d < e {
					t.Fatalf("%s returned with the log durable to %d of %d", what, d, e)
				}
			}
			ctx := context.Background()
			x := xid(1)
			if err := b.XAStart(x, XANoFlags, 0); err != nil {
				t.Fatal(err)
			}
			if err := b.XAAdd(x, txMsgs("t", "xa")); err != nil {
				t.Fatal(err)
			}
			if err := b.XAEnd(x, XASuccess); err != nil {
				t.Fatal(err)
			}
			if _, err := b.XAPrepare(ctx, x); err != nil {
				t.Fatal(err)
			}
			durable("XA prepare")
			if _, err := b.XACommit(ctx, x, false); err != nil {
				t.Fatal(err)
			}
			durable("XA commit")

			id, err := b.BeginTx(0)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.AddTx(id, txMsgs("t", "local")); err != nil {
				t.Fatal(err)
			}
			if _, err := b.CommitTx(ctx, id); err != nil {
				t.Fatal(err)
			}
			durable("local commit")
			if end := endOf(b, "t", 0); end != 2 {
				t.Fatalf("readable end %d after two durable commits, want 2", end)
			}
		})
	}
}
