package gateway

import (
	"fmt"
	"testing"

	"github.com/imagomq/imago/api"
)

// TestXACompoundStart: start with messages, end and prepare is one request; commit makes the
// messages visible; a failing step rolls the branch back; only noflags may be compound.
func TestXACompoundStart(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 2)
	x := xidJSONText(9, "compound", "b1")
	r := ts.must(200, "POST", "/v1/xa/start", fmt.Sprintf(`{"xid":%s,"messages":[{"topic":"t","value":"one","partition":0},{"topic":"t","value":"two","partition":1}],"end":"success","prepare":true}`, x))
	var prep api.XAPrepareResponse
	decodeJSON(t, r.body, &prep)
	if prep.Vote != api.XAVoteOK || prep.State != api.XAPrepared {
		t.Fatalf("compound start answered %s", r.body)
	}
	if got := ts.fetch("t", 0, "offset=0"); len(got.Messages) != 0 {
		t.Fatalf("prepared messages visible: %+v", got.Messages)
	}
	if rec := ts.recover(); len(rec) != 1 {
		t.Fatalf("recover: %v", rec)
	}
	ts.xaDo(x, "commit")
	if a, b := ts.fetch("t", 0, "offset=0"), ts.fetch("t", 1, "offset=0"); len(a.Messages) != 1 || len(b.Messages) != 1 {
		t.Fatalf("after commit: %d and %d messages", len(a.Messages), len(b.Messages))
	}

	// Messages and end only: the branch is idle, and the usual verbs continue it.
	y := xidJSONText(9, "compound", "b2")
	r = ts.must(200, "POST", "/v1/xa/start", fmt.Sprintf(`{"xid":%s,"messages":[{"topic":"t","value":"x"}],"end":"success"}`, y))
	if string(r.body) != `{"state":"idle"}`+"\n" && string(r.body) != `{"state":"idle"}` {
		t.Fatalf("start with end answered %s", r.body)
	}
	ts.xaDo(y, "prepare", "rollback")

	// A failing step (unknown topic) rolls the new branch back: nothing of it remains.
	z := xidJSONText(9, "compound", "b3")
	ts.must(404, "POST", "/v1/xa/start", fmt.Sprintf(`{"xid":%s,"messages":[{"topic":"nope","value":"x"}],"end":"success","prepare":true}`, z))
	ts.xaExpect(t, z, "prepare", 404, "XAER_NOTA")

	// Refused shapes: compound join, prepare without end success, a bad end flag.
	for _, body := range []string{
		fmt.Sprintf(`{"xid":%s,"flags":"join","messages":[{"topic":"t","value":"x"}]}`, xidJSONText(9, "compound", "b4")),
		fmt.Sprintf(`{"xid":%s,"prepare":true}`, xidJSONText(9, "compound", "b5")),
		fmt.Sprintf(`{"xid":%s,"end":"fail","prepare":true}`, xidJSONText(9, "compound", "b6")),
		fmt.Sprintf(`{"xid":%s,"end":"later"}`, xidJSONText(9, "compound", "b7")),
	} {
		r := ts.must(400, "POST", "/v1/xa/start", body)
		if e := errorBody(t, r); e.Error.Code != "XAER_INVAL" {
			t.Fatalf("%s: code %s", body, e.Error.Code)
		}
	}
	if rec := ts.recover(); len(rec) != 0 {
		t.Fatalf("recover after the refusals: %v", rec)
	}
}

// BenchmarkXACompoundBranchHTTP is BenchmarkXABranchHTTP with a compound start: two requests.
func BenchmarkXACompoundBranchHTTP(b *testing.B) {
	benchXA(b, true)
}
