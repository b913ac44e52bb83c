package client_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/gateway"
)

var xidSeq atomic.Int64

func newXid() client.Xid {
	n := xidSeq.Add(1)
	return client.Xid{FormatID: 7, Gtrid: []byte(fmt.Sprintf("gtrid-%d-%d", time.Now().UnixNano(), n)), Bqual: []byte{1}}
}

// TestXATwoPhaseCommit drives a full 2PC through XAResource against a real server: the
// branch's messages are invisible until commit, then all visible at consecutive offsets.
func TestXATwoPhaseCommit(t *testing.T) {
	ctx := background(t)
	c := client.New(imagoURL)
	topic := uniqueTopic("xa-2pc")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	rm := c.NewXAResource()
	if err := rm.SetTransactionTimeout(time.Minute); err != nil {
		t.Fatal(err)
	}
	x := newXid()
	if err := rm.Start(ctx, x, client.TMNoFlags); err != nil {
		t.Fatal(err)
	}
	if err := rm.Publish(ctx, x, client.To(topic, client.Text("debit")), client.To(topic, client.Text("credit"))); err != nil {
		t.Fatal(err)
	}
	if err := rm.End(ctx, x, client.TMSuccess); err != nil {
		t.Fatal(err)
	}
	rdonly, err := rm.Prepare(ctx, x)
	if err != nil || rdonly {
		t.Fatalf("prepare: rdonly=%v err=%v", rdonly, err)
	}
	if end := endOffset(t, c, topic); end != 0 {
		t.Fatalf("prepared messages are visible: end %d", end)
	}
	xids, err := rm.Recover(ctx)
	if err != nil || !containsXid(xids, x) {
		t.Fatalf("recover %v %v does not list %s", xids, err, x)
	}
	pos, err := rm.Commit(ctx, x, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(pos) != 2 || pos[0].Offset != 0 || pos[1].Offset != 1 || pos[0].Topic != topic {
		t.Fatalf("positions %+v", pos)
	}
	res, err := c.Fetch(ctx, topic, 0, client.FetchOptions{})
	if err != nil || len(res.Messages) != 2 || string(res.Messages[1].Value) != `"credit"` {
		t.Fatalf("fetch after commit: %+v %v", res, err)
	}
	// An empty branch votes read-only and is gone; one-phase commit from idle works.
	y := newXid()
	mustXA(t, rm.Start(ctx, y, ""))
	mustXA(t, rm.End(ctx, y, client.TMSuccess))
	if rdonly, err := rm.Prepare(ctx, y); err != nil || !rdonly {
		t.Fatalf("empty branch: rdonly=%v err=%v", rdonly, err)
	}
	z := newXid()
	mustXA(t, rm.Start(ctx, z, ""))
	mustXA(t, rm.Publish(ctx, z, client.To(topic, client.Text("one-phase"))))
	mustXA(t, rm.End(ctx, z, client.TMSuccess))
	if pos, err := rm.Commit(ctx, z, true); err != nil || len(pos) != 1 || pos[0].Offset != 2 {
		t.Fatalf("one-phase commit: %+v %v", pos, err)
	}
}

func mustXA(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func containsXid(xids []client.Xid, x client.Xid) bool {
	for _, y := range xids {
		if y.FormatID == x.FormatID && bytes.Equal(y.Gtrid, x.Gtrid) && bytes.Equal(y.Bqual, x.Bqual) {
			return true
		}
	}
	return false
}

func endOffset(t *testing.T, c *client.Client, topic string) int64 {
	t.Helper()
	d, err := c.DescribeTopic(background(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, p := range d.Partitions {
		n += p.EndOffset
	}
	return n
}

// TestXAErrorCodes: each illegal move answers its XA code as *client.XAError, with the
// numbers of javax.transaction.xa.XAException; an unreachable server is XAER_RMFAIL.
func TestXAErrorCodes(t *testing.T) {
	ctx := background(t)
	c := client.New(imagoURL)
	rm := c.NewXAResource()
	topic := uniqueTopic("xa-codes")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	x := newXid()
	mustXA(t, rm.Start(ctx, x, client.TMNoFlags))
	prepared := newXid()
	mustXA(t, rm.Start(ctx, prepared, ""))
	mustXA(t, rm.Publish(ctx, prepared, client.To(topic, client.Text("p"))))
	mustXA(t, rm.End(ctx, prepared, client.TMSuccess))
	if _, err := rm.Prepare(ctx, prepared); err != nil {
		t.Fatal(err)
	}
	failed := newXid()
	mustXA(t, rm.Start(ctx, failed, ""))
	mustXA(t, rm.Publish(ctx, failed, client.To(topic, client.Text("f"))))
	mustXA(t, rm.End(ctx, failed, client.TMFail))

	dead := client.New("http://127.0.0.1:1").NewXAResource()
	tests := []struct {
		name  string
		call  func() error
		code  string
		errno int
	}{
		{"commit unknown xid", func() error { _, err := rm.Commit(ctx, newXid(), false); return err }, client.XAERNota, -4},
		{"second start", func() error { return rm.Start(ctx, x, client.TMNoFlags) }, client.XAERDupID, -8},
		{"prepare an active branch", func() error { _, err := rm.Prepare(ctx, x); return err }, client.XAERProto, -6},
		{"one-phase commit after prepare", func() error { _, err := rm.Commit(ctx, prepared, true); return err }, client.XAERProto, -6},
		{"prepare a rollback-only branch", func() error { _, err := rm.Prepare(ctx, failed); return err }, client.XARBRollback, 100},
		{"forget a prepared branch", func() error { return rm.Forget(ctx, prepared) }, client.XAERProto, -6},
		{"empty gtrid", func() error { return rm.Start(ctx, client.Xid{Bqual: []byte{1}}, "") }, client.XAERInval, -5},
		{"bad flags", func() error { return rm.End(ctx, x, "later") }, client.XAERInval, -5},
		{"server down", func() error { return dead.Start(ctx, newXid(), "") }, client.XAERRMFail, -7},
		{"recover from a server that is down", func() error { _, err := dead.Recover(ctx); return err }, client.XAERRMFail, -7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var xe *client.XAError
			if !errors.As(err, &xe) {
				t.Fatalf("err %v (%T) is not *client.XAError", err, err)
			}
			if xe.Code != tt.code || xe.Errno() != tt.errno || !client.IsXACode(err, tt.code) {
				t.Fatalf("got %s (%d), want %s (%d): %v", xe.Code, xe.Errno(), tt.code, tt.errno, err)
			}
		})
	}
	mustXA(t, rm.Rollback(ctx, prepared))
	if err := rm.Rollback(ctx, x); !client.IsXACode(err, client.XAERProto) {
		t.Fatalf("rollback of an active branch: %v, want XAER_PROTO (end it first)", err)
	}
	mustXA(t, rm.End(ctx, x, client.TMSuccess))
	mustXA(t, rm.Rollback(ctx, x))
}

// TestXARecoverAfterRestart: a prepared branch survives a restart of the server with its
// messages, Recover lists it, and the transaction manager commits it then. A second branch
// decided heuristically by an operator answers XA_HEURRB to the manager's commit, until
// Forget.
func TestXARecoverAfterRestart(t *testing.T) {
	ctx := background(t)
	dir := t.TempDir()
	srv := startImago(t, dir, gateway.Options{})
	c := client.New(srv.URL)
	if _, err := c.CreateTopic(ctx, "settlement", client.TopicConfig{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	rm := c.NewXAResource()
	a, b, active := newXid(), newXid(), newXid()
	for _, x := range []client.Xid{a, b} {
		mustXA(t, rm.Start(ctx, x, ""))
		mustXA(t, rm.Publish(ctx, x, client.To("settlement", client.Message{Key: client.Ptr("acct-1"), Value: []byte(`{"amount":100}`)}),
			client.To("settlement", client.Message{Key: client.Ptr("acct-1"), Value: []byte(`{"amount":-100}`)})))
		mustXA(t, rm.End(ctx, x, client.TMSuccess))
		if _, err := rm.Prepare(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	mustXA(t, rm.Start(ctx, active, ""))
	mustXA(t, rm.Publish(ctx, active, client.To("settlement", client.Text("never"))))
	if err := srv.close(); err != nil {
		t.Fatal(err)
	}

	srv = startImago(t, dir, gateway.Options{})
	c = client.New(srv.URL)
	rm2 := c.NewXAResource()
	if rm.IsSameRM(rm2) {
		t.Fatal("IsSameRM: a server at another address is another RM")
	}
	xids, err := rm2.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(xids) != 2 || !containsXid(xids, a) || !containsXid(xids, b) {
		t.Fatalf("recover after restart: %v, want %s and %s", xids, a, b)
	}
	if _, err := rm2.Commit(ctx, active, false); !client.IsXACode(err, client.XAERNota) {
		t.Fatalf("the active branch must be gone after the restart: %v", err)
	}
	if end := endOffset(t, c, "settlement"); end != 0 {
		t.Fatalf("prepared messages visible after restart: %d", end)
	}
	pos, err := rm2.Commit(ctx, a, false)
	if err != nil || len(pos) != 2 || pos[1].Offset != pos[0].Offset+1 || pos[0].Partition != pos[1].Partition {
		t.Fatalf("commit after restart: %+v %v", pos, err)
	}
	// The operator rolls b back; the manager's commit learns it, forget clears it.
	if err := rm2.Heuristic(ctx, b, false); err != nil {
		t.Fatal(err)
	}
	if _, err := rm2.Commit(ctx, b, false); !client.IsXACode(err, client.XAHeurRB) {
		t.Fatalf("commit after a heuristic rollback: %v, want XA_HEURRB", err)
	}
	mustXA(t, rm2.Forget(ctx, b))
	if xids, err := rm2.Recover(ctx); err != nil || len(xids) != 0 {
		t.Fatalf("recover after commit and forget: %v %v", xids, err)
	}
	if end := endOffset(t, c, "settlement"); end != 2 {
		t.Fatalf("stored %d messages, want the 2 of the committed branch", end)
	}
}

// TestXAHeuristicNeedsAdmin: the heuristic decision is an admin's; a producer token gets
// XAER_RMERR wrapping the 403.
func TestXAHeuristicNeedsAdmin(t *testing.T) {
	ctx := background(t)
	srv := startImago(t, "", gateway.Options{Tokens: []gateway.Token{
		{Name: "admin", Token: "admin-secret", Admin: true, Produce: []string{"*"}, Consume: []string{"*"}},
		{Name: "app", Token: "producer-secret", Produce: []string{"*"}},
	}})
	admin := client.New(srv.URL, client.WithToken("admin-secret"))
	if _, err := admin.CreateTopic(ctx, "t", client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	rm := client.New(srv.URL, client.WithToken("producer-secret")).NewXAResource()
	x := newXid()
	mustXA(t, rm.Start(ctx, x, ""))
	mustXA(t, rm.Publish(ctx, x, client.To("t", client.Text("v"))))
	mustXA(t, rm.End(ctx, x, client.TMSuccess))
	if _, err := rm.Prepare(ctx, x); err != nil {
		t.Fatal(err)
	}
	err := rm.Heuristic(ctx, x, true)
	if !client.IsXACode(err, client.XAERRMErr) || !client.IsStatus(err, http.StatusForbidden) {
		t.Fatalf("heuristic with a producer token: %v", err)
	}
	mustXA(t, admin.NewXAResource().Heuristic(ctx, x, true))
	if _, err := rm.Commit(ctx, x, false); !client.IsXACode(err, client.XAHeurCom) {
		t.Fatalf("commit after a heuristic commit: %v, want XA_HEURCOM", err)
	}
}

// TestParseXidMatchesBroker: the client reads and writes the broker's text form of an xid.
func TestParseXidMatchesBroker(t *testing.T) {
	for _, s := range []string{"XID:1:0a0b:01", "XID:0:" + fmt.Sprintf("%0128x", 1) + ":ff", "XID:2147483647:AB:cd"} {
		bx, berr := broker.ParseXid(s)
		cx, cerr := client.ParseXid(s)
		if (berr == nil) != (cerr == nil) {
			t.Fatalf("%s: broker %v, client %v", s, berr, cerr)
		}
		if berr == nil && bx.String() != cx.String() {
			t.Fatalf("%s: broker %s, client %s", s, bx, cx)
		}
	}
	for _, s := range []string{"", "XID:1:0a", "TX:1:0a:0b", "XID:x:0a:0b", "XID:1:zz:0b", "XID:1::0b", "XID:-1:0a:0b", "XID:1:0a:" + fmt.Sprintf("%0130x", 1)} {
		if _, err := client.ParseXid(s); !client.IsXACode(err, client.XAERInval) {
			t.Errorf("ParseXid(%q): %v, want XAER_INVAL", s, err)
		}
		if _, err := broker.ParseXid(s); err == nil {
			t.Errorf("broker.ParseXid(%q) accepts it", s)
		}
	}
}

// FuzzParseXid: the client's parser never panics, agrees with the broker's on what is valid,
// and what it accepts prints back to an xid that parses to the same value.
func FuzzParseXid(f *testing.F) {
	for _, s := range []string{"XID:1:0a0b:01", "XID:-1:00:00", "XID:1::", "TX:1", "XID:2147483648:00:00", "XID:1:0A:0b:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cx, cerr := client.ParseXid(s)
		_, berr := broker.ParseXid(s)
		if (cerr == nil) != (berr == nil) {
			t.Fatalf("%q: client %v, broker %v", s, cerr, berr)
		}
		if cerr != nil {
			return
		}
		again, err := client.ParseXid(cx.String())
		if err != nil || again.String() != cx.String() {
			t.Fatalf("%q: round trip %q: %v", s, cx.String(), err)
		}
	})
}
