package textproto

import (
	"strings"
	"testing"
)

func TestLocalTransaction(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("ledger", 1)
	ts.createTopic("audit", 1)
	c := ts.dial()

	key := c.expect("transaction TX:- s1 BEGIN 30 1\r\n", 200)
	if !strings.HasPrefix(key, "TX:") || len(key) < 10 {
		t.Fatalf("BEGIN answered %q", key)
	}
	if got := c.expect("put ledger 0 6 0 "+key+" 2\r\ndebit!", 200); got != "0 -1" {
		t.Fatalf("put in tx: %q", got)
	}
	if got := c.expect("put audit -1 5 0 "+key+" 3\r\nnote!", 200); got != "-1 -1" {
		t.Fatalf("put in tx: %q", got)
	}
	// Invisible before commit.
	if a := c.call("get ledger g 0 0 100 4\r\n"); a.kind != "value" || len(a.body) != 0 {
		t.Fatalf("visible before commit: %v", a)
	}
	got := c.expect("transaction "+key+" s1 COMMIT_ONE_PHASE 5\r\n", 200)
	if got != "ledger 0 0\r\naudit 0 0" {
		t.Fatalf("commit answered %q", got)
	}
	a := c.call("get ledger g 0 0 100 6\r\n")
	if msgs, err := DecodeMessages(a.body); err != nil || len(msgs) != 1 || string(msgs[0].Value) != "debit!" {
		t.Fatalf("after commit: %v %+v", err, msgs)
	}
	// Committed: the verbs conflict or find nothing.
	c.expect("transaction "+key+" s1 COMMIT_ONE_PHASE 7\r\n", 409)
	c.expect("put ledger 0 1 0 "+key+" 8\r\nx", 409)

	// Rollback discards.
	key2 := c.expect("transaction TX:- s1 BEGIN 9\r\n", 200)
	c.expect("put ledger 0 1 0 "+key2+" 10\r\nx", 200)
	c.expect("transaction "+key2+" s1 ROLLBACK 11\r\n", 200)
	if ti, _ := ts.b.Topic("ledger"); ti.Partitions[0].EndOffset != 1 {
		t.Fatalf("rolled-back message visible: end %d", ti.Partitions[0].EndOffset)
	}

	c.expect("transaction TX:nosuch s1 COMMIT_ONE_PHASE 12\r\n", 404)
	c.expect("transaction TX:abc s1 BEGIN 13\r\n", 400)
	c.expect("transaction "+key2+" s1 PREPARE 14\r\n", 400)
	c.expect("put ledger 0 1 0 TX:- 15\r\nx", 400)

	body := c.expect("stats transactions 16\r\n", 200)
	for _, want := range []string{"STAT open 0\r\n", "STAT committed 1\r\n", "STAT rolled_back 1\r\n"} {
		if !strings.Contains(body, want) {
			t.Fatalf("stats transactions lacks %q:\n%s", want, body)
		}
	}
}

func TestXATransaction(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("settlement", 2)
	c := ts.dial()
	const xid = "XID:1:6774726964:627175616c"

	c.expect("transaction "+xid+" s BEGIN 60 1\r\n", 200)
	c.expect("transaction "+xid+" s BEGIN 2\r\n", 409) // XAER_DUPID
	c.expect("put settlement 1 3 0 "+xid+" 3\r\nabc", 200)
	c.expect("transaction "+xid+" s END 4\r\n", 200)
	if got := c.expect("transaction "+xid+" s END 5\r\n", 409); !strings.HasPrefix(got, "XAER_PROTO") {
		t.Fatalf("END twice: %q", got)
	}
	if got := c.expect("transaction "+xid+" s PREPARE 6\r\n", 200); got != "0" {
		t.Fatalf("PREPARE voted %q", got)
	}
	if got := c.expect("transaction - s RECOVER 7\r\n", 200); got != xid {
		t.Fatalf("RECOVER: %q", got)
	}
	body := c.expect("stats transactions 8\r\n", 200)
	if !strings.Contains(body, "STAT prepared 1\r\n") {
		t.Fatalf("stats transactions: %s", body)
	}
	if got := c.expect("transaction "+xid+" s COMMIT_TWO_PHASE 9\r\n", 200); got != "settlement 1 0" {
		t.Fatalf("COMMIT_TWO_PHASE: %q", got)
	}
	if got := c.expect("transaction "+xid+" s COMMIT_TWO_PHASE 10\r\n", 404); !strings.HasPrefix(got, "XAER_NOTA") {
		t.Fatalf("commit of a forgotten branch: %q", got)
	}
	if got := c.expect("transaction - s RECOVER 11\r\n", 200); got != "" {
		t.Fatalf("RECOVER after commit: %q", got)
	}

	// A branch without messages votes read-only; one-phase commit and rollback.
	const x2 = "XID:1:61:62"
	c.expect("transaction "+x2+" s BEGIN 12\r\n", 200)
	c.expect("transaction "+x2+" s END 13\r\n", 200)
	if got := c.expect("transaction "+x2+" s PREPARE 14\r\n", 200); got != "3" {
		t.Fatalf("empty PREPARE voted %q", got)
	}
	const x3 = "XID:1:63:64"
	c.expect("transaction "+x3+" s BEGIN 15\r\n", 200)
	c.expect("put settlement 0 1 0 "+x3+" 16\r\nz", 200)
	c.expect("transaction "+x3+" s END 17\r\n", 200)
	if got := c.expect("transaction "+x3+" s COMMIT_ONE_PHASE 18\r\n", 200); got != "settlement 0 0" {
		t.Fatalf("COMMIT_ONE_PHASE: %q", got)
	}
	const x4 = "XID:1:65:66"
	c.expect("transaction "+x4+" s BEGIN 19\r\n", 200)
	c.expect("put settlement 0 1 0 "+x4+" 20\r\nz", 200)
	c.expect("transaction "+x4+" s END 21\r\n", 200)
	c.expect("transaction "+x4+" s PREPARE 22\r\n", 200)
	c.expect("transaction "+x4+" s ROLLBACK 23\r\n", 200)
	c.expect("transaction "+x4+" s FORGET 24\r\n", 404)
	c.expect("transaction XID:1:zz:62 s BEGIN 25\r\n", 400) // XAER_INVAL: not hex
	c.expect("put settlement 0 1 0 XID:9:99:99 26\r\nz", 404)
}

// TestTransactionRights: as over HTTP, the transaction verbs need a token with some produce
// pattern, and a put in a transaction needs produce on its topic. A consume-only (or
// admin-only) token can neither see nor end another client's transactions.
func TestTransactionRights(t *testing.T) {
	ts := startServer(t, Options{Tokens: []Token{
		{Name: "payments", Token: "s3cret-payments", Produce: []string{"settlement.*"}, Consume: []string{"settlement.*"}},
		{Name: "reader", Token: "s3cret-reader", Consume: []string{"*"}},
		{Name: "ops", Token: "s3cret-ops", Admin: true},
	}})
	ts.createTopic("settlement.transfers", 1)
	ts.createTopic("hr", 1)
	p := ts.dial()
	p.expect("auth s3cret-payments 1\r\n", 200)
	key := p.expect("transaction TX:- s BEGIN 60 2\r\n", 200)
	p.expect("put settlement.transfers 0 1 0 "+key+" 3\r\na", 200)
	if got := p.expect("put hr 0 1 0 "+key+" 4\r\nb", 403); !strings.Contains(got, "produce") {
		t.Fatalf("put in tx to a topic without produce: %q", got)
	}
	const xid = "XID:1:6774726964:627175616c"
	p.expect("transaction "+xid+" s BEGIN 60 5\r\n", 200)
	p.expect("put settlement.transfers 0 1 0 "+xid+" 6\r\nc", 200)
	p.expect("transaction "+xid+" s END 7\r\n", 200)
	p.expect("transaction "+xid+" s PREPARE 8\r\n", 200)

	for _, tok := range []string{"s3cret-reader", "s3cret-ops"} {
		r := ts.dial()
		r.expect("auth "+tok+" 10\r\n", 200)
		for i, req := range []string{
			"transaction - s RECOVER 11\r\n",
			"transaction " + xid + " s ROLLBACK 12\r\n",
			"transaction " + xid + " s COMMIT_TWO_PHASE 13\r\n",
			"transaction " + xid + " s FORGET 14\r\n",
			"transaction " + key + " s ROLLBACK 15\r\n",
			"transaction " + key + " s COMMIT_ONE_PHASE 16\r\n",
			"transaction TX:- s BEGIN 17\r\n",
			"transaction XID:1:61:62 s BEGIN 18\r\n",
		} {
			a := r.call(req)
			if a.code != 403 || a.opaque != int64(11+i) || !strings.Contains(string(a.body), "produce") {
				t.Errorf("%s: %q: got %v, want 403", tok, req, a)
			}
		}
		r.expect("put settlement.transfers 0 1 0 "+key+" 19\r\nd", 403)
	}

	// Both transactions are untouched: their owner ends them.
	if got := p.expect("transaction - s RECOVER 20\r\n", 200); got != xid {
		t.Fatalf("RECOVER: %q", got)
	}
	if got := p.expect("transaction "+xid+" s COMMIT_TWO_PHASE 21\r\n", 200); got != "settlement.transfers 0 0" {
		t.Fatalf("COMMIT_TWO_PHASE: %q", got)
	}
	if got := p.expect("transaction "+key+" s COMMIT_ONE_PHASE 22\r\n", 200); got != "settlement.transfers 0 1" {
		t.Fatalf("COMMIT_ONE_PHASE: %q", got)
	}
}
