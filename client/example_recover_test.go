package client_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestExampleXAResourceRecoverOwnBranchesOnly runs ExampleXAResource_Recover while the broker
// holds two prepared branches: one of the example's manager (format id 1, gtrid "transfer-…",
// no logged commit) and one of Imago's own coordinator (format id 0x494D4731), whose
// transaction may be decided commit. The pass must roll back its own and leave the other
// prepared: rolling it back would drop the messages of a committed global transaction.
func TestExampleXAResourceRecoverOwnBranchesOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := client.New(imagoURL)
	if _, err := c.CreateTopic(ctx, "settlement.recover", client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	rm := c.NewXAResource()
	own := client.Xid{FormatID: 1, Gtrid: []byte("transfer-recover-own"), Bqual: []byte("broker")}
	other := client.Xid{FormatID: 0x494D4731, Gtrid: []byte("0123456789abcdef012345678901234567890123"), Bqual: []byte("broker")}
	for _, xid := range []client.Xid{own, other} {
		if err := rm.Start(ctx, xid, client.TMNoFlags); err != nil {
			t.Fatal(err)
		}
		if err := rm.Publish(ctx, xid, client.To("settlement.recover", client.JSON(`{"amount":100}`))); err != nil {
			t.Fatal(err)
		}
		if err := rm.End(ctx, xid, client.TMSuccess); err != nil {
			t.Fatal(err)
		}
		if _, err := rm.Prepare(ctx, xid); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { rm.Rollback(context.Background(), other) })

	ExampleXAResource_Recover()

	xids, err := rm.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	listed := func(x client.Xid) bool {
		return slices.ContainsFunc(xids, func(y client.Xid) bool { return y.String() == x.String() })
	}
	if !listed(other) {
		t.Errorf("the recovery pass finished another manager's prepared branch %s; prepared now: %v", other, xids)
	}
	if listed(own) {
		t.Errorf("the recovery pass left its own branch %s prepared", own)
	}
}
