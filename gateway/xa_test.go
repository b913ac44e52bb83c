package gateway

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
)

// xidJSONText is the JSON of an xid whose gtrid and bqual are the bytes of g and b.
func xidJSONText(format int, g, b string) string {
	return fmt.Sprintf(`{"format_id":%d,"gtrid":"%s","bqual":"%s"}`, format, hex.EncodeToString([]byte(g)), hex.EncodeToString([]byte(b)))
}

// xaSteps are the XA calls the tests combine; %s is the xid.
var xaSteps = map[string][2]string{
	"start":     {"start", `{"xid":%s}`},
	"join":      {"start", `{"xid":%s,"flags":"join"}`},
	"resume":    {"start", `{"xid":%s,"flags":"resume"}`},
	"msg":       {"messages", `{"xid":%s,"messages":[{"topic":"t","value":"m","partition":0}]}`},
	"end":       {"end", `{"xid":%s,"flags":"success"}`},
	"fail":      {"end", `{"xid":%s,"flags":"fail"}`},
	"suspend":   {"end", `{"xid":%s,"flags":"suspend"}`},
	"prepare":   {"prepare", `{"xid":%s}`},
	"commit":    {"commit", `{"xid":%s,"one_phase":false}`},
	"commit1":   {"commit", `{"xid":%s,"one_phase":true}`},
	"rollback":  {"rollback", `{"xid":%s}`},
	"forget":    {"forget", `{"xid":%s}`},
	"hcommit":   {"heuristic", `{"xid":%s,"decision":"commit"}`},
	"hrollback": {"heuristic", `{"xid":%s,"decision":"rollback"}`},
}

// xa sends one step for xid x.
func (ts *testServer) xa(step, x string) response {
	ts.t.Helper()
	s, ok := xaSteps[step]
	if !ok {
		ts.t.Fatalf("no step %q", step)
	}
	return ts.do("POST", "/v1/xa/"+s[0], fmt.Sprintf(s[1], x))
}

// xaDo runs steps on x, each of which must answer 200.
func (ts *testServer) xaDo(x string, steps ...string) {
	ts.t.Helper()
	for _, st := range steps {
		if r := ts.xa(st, x); r.status != 200 {
			ts.t.Fatalf("%s: %d %s", st, r.status, r.body)
		}
	}
}

// xaExpect runs step on x and checks the status and, for an error, the XA code.
func (ts *testServer) xaExpect(t *testing.T, x, step string, status int, code string) response {
	t.Helper()
	r := ts.xa(step, x)
	if r.status != status {
		t.Fatalf("%s: status %d, want %d; body %s", step, r.status, status, r.body)
	}
	if code != "" {
		if e := errorBody(t, r); e.Error.Code != code {
			t.Fatalf("%s: code %q, want %q (%s)", step, e.Error.Code, code, e.Error.Message)
		}
	}
	return r
}

func (ts *testServer) recover() []api.Xid {
	ts.t.Helper()
	var out api.XARecoverResponse
	decodeJSON(ts.t, ts.must(200, "GET", "/v1/xa/recover", "").body, &out)
	if out.Xids == nil {
		ts.t.Fatal("recover: xids is null")
	}
	return out.Xids
}

// TestXAVisibility: a branch's messages are invisible while active, idle and prepared, and
// visible together, at consecutive offsets, after a two-phase commit; a one-phase commit
// from idle works too.
func TestXAVisibility(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	ts.createTopic("u", 2)
	x := xidJSONText(7, "global-1", "branch-1")

	r := ts.xaExpect(t, x, "start", 200, "")
	if string(r.body) != `{"state":"active"}`+"\n" {
		t.Fatalf("start: %s", r.body)
	}
	ts.must(200, "POST", "/v1/xa/messages", `{"xid":`+x+`,"messages":[{"topic":"t","value":1},{"topic":"u","value":2,"partition":1}]}`)
	ts.produce("t", `{"messages":[{"value":0}]}`)
	ts.must(200, "POST", "/v1/xa/messages", `{"xid":`+x+`,"messages":[{"topic":"t","value":3}]}`)
	if r := ts.xaExpect(t, x, "end", 200, ""); string(r.body) != `{"state":"idle"}`+"\n" {
		t.Fatalf("end: %s", r.body)
	}
	r = ts.xaExpect(t, x, "prepare", 200, "")
	var vote api.XAPrepareResponse
	decodeJSON(t, r.body, &vote)
	if vote.Vote != "ok" || vote.State != "prepared" {
		t.Fatalf("prepare: %s", r.body)
	}
	if got := fmt.Sprint(ts.ends("t"), ts.ends("u")); got != "[1] [0 0]" {
		t.Fatalf("prepared branch visible: ends %s", got)
	}
	if got := ts.recover(); len(got) != 1 || got[0] != (api.Xid{FormatID: 7, Gtrid: hex.EncodeToString([]byte("global-1")), Bqual: hex.EncodeToString([]byte("branch-1"))}) {
		t.Fatalf("recover: %+v", got)
	}
	r = ts.xaExpect(t, x, "commit", 200, "")
	var cr api.TxCommitResponse
	decodeJSON(t, r.body, &cr)
	want := []api.TopicPosition{{Topic: "t", Partition: 0, Offset: 1}, {Topic: "u", Partition: 1, Offset: 0}, {Topic: "t", Partition: 0, Offset: 2}}
	if cr.State != "committed" || fmt.Sprint(cr.Offsets) != fmt.Sprint(want) {
		t.Fatalf("commit: %s", r.body)
	}
	if got := values(ts.fetch("t", 0, "offset=0").Messages); got != "0 1 3" {
		t.Fatalf("t/0 holds %s", got)
	}
	if len(ts.recover()) != 0 {
		t.Fatal("committed branch still recovered")
	}
	ts.xaExpect(t, x, "commit", 404, "XAER_NOTA") // finished branches are forgotten

	// One-phase from idle.
	y := xidJSONText(7, "global-2", "b")
	ts.xaDo(y, "start", "msg", "end")
	if got := fmt.Sprint(ts.ends("t")); got != "[3]" {
		t.Fatalf("idle branch visible: %s", got)
	}
	ts.xaExpect(t, y, "commit1", 200, "")
	if got := fmt.Sprint(ts.ends("t")); got != "[4]" {
		t.Fatalf("after one-phase commit: %s", got)
	}
	// Rollback of a prepared branch: never visible.
	z := xidJSONText(7, "global-3", "b")
	ts.xaDo(z, "start", "msg", "end", "prepare", "rollback")
	ts.produce("t", `{"messages":[{"value":"after"}]}`)
	if got := values(ts.fetch("t", 0, "offset=3").Messages); got != `"m" "after"` {
		t.Fatalf("after rollback t/0 from 3 holds %s", got)
	}
	if c := ts.txCounter(kindXA, outcomeCommitted); c != 2 {
		t.Errorf("xa committed counter %v", c)
	}
	if c := ts.txCounter(kindXA, outcomeRolledBack); c != 1 {
		t.Errorf("xa rolled_back counter %v", c)
	}
}

// TestXAPrepareReadOnly: a branch without messages votes rdonly and is forgotten.
func TestXAPrepareReadOnly(t *testing.T) {
	ts := startServer(t, Options{})
	x := xidJSONText(1, "empty", "b")
	ts.xaDo(x, "start", "end")
	r := ts.xaExpect(t, x, "prepare", 200, "")
	if string(r.body) != `{"vote":"rdonly","state":"forgotten"}`+"\n" {
		t.Fatalf("prepare: %s", r.body)
	}
	if len(ts.recover()) != 0 {
		t.Fatal("read-only branch recovered")
	}
	ts.xaExpect(t, x, "commit", 404, "XAER_NOTA")
	ts.xaExpect(t, x, "rollback", 404, "XAER_NOTA")
	if c := ts.txCounter(kindXA, outcomeReadOnly); c != 1 {
		t.Errorf("read_only counter %v", c)
	}
}

// TestXAStateTable runs a verb after a sequence of legal steps and checks the status and XA
// code: a representative subset of the broker's state machine (broker/tx_test.go has all of
// it), here to prove the codes and statuses over HTTP.
func TestXAStateTable(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	prepared := []string{"start", "msg", "end", "prepare"}
	cases := []struct {
		setup  []string
		verb   string
		status int
		code   string
	}{
		// Unknown xid.
		{nil, "commit", 404, "XAER_NOTA"},
		{nil, "commit1", 404, "XAER_NOTA"},
		{nil, "rollback", 404, "XAER_NOTA"},
		{nil, "prepare", 404, "XAER_NOTA"},
		{nil, "end", 404, "XAER_NOTA"},
		{nil, "msg", 404, "XAER_NOTA"},
		{nil, "join", 404, "XAER_NOTA"},
		{nil, "resume", 404, "XAER_NOTA"},
		{nil, "forget", 404, "XAER_NOTA"},
		{nil, "hcommit", 404, "XAER_NOTA"},
		// A second start.
		{[]string{"start"}, "start", 409, "XAER_DUPID"},
		{[]string{"start", "end"}, "start", 409, "XAER_DUPID"},
		{prepared, "start", 409, "XAER_DUPID"},
		// Verbs in the wrong state.
		{[]string{"start"}, "prepare", 409, "XAER_PROTO"},
		{[]string{"start"}, "commit1", 409, "XAER_PROTO"},
		{[]string{"start"}, "join", 409, "XAER_PROTO"},
		{[]string{"start"}, "forget", 409, "XAER_PROTO"},
		{[]string{"start", "end"}, "end", 409, "XAER_PROTO"},
		{[]string{"start", "end"}, "msg", 409, "XAER_PROTO"},
		{[]string{"start", "end"}, "resume", 409, "XAER_PROTO"},
		{[]string{"start", "end"}, "commit", 409, "XAER_PROTO"},
		{[]string{"start", "suspend"}, "msg", 409, "XAER_PROTO"},
		{[]string{"start", "suspend"}, "join", 409, "XAER_PROTO"},
		{[]string{"start", "suspend"}, "suspend", 409, "XAER_PROTO"},
		{[]string{"start", "msg", "end"}, "hcommit", 409, "XAER_PROTO"},
		{prepared, "commit1", 409, "XAER_PROTO"}, // one-phase only from idle, never after prepare
		{prepared, "prepare", 409, "XAER_PROTO"},
		{prepared, "end", 409, "XAER_PROTO"},
		{prepared, "forget", 409, "XAER_PROTO"},
		// Rollback-only.
		{[]string{"start", "msg", "fail"}, "prepare", 409, "XA_RBROLLBACK"},
		{[]string{"start", "msg", "fail"}, "commit1", 409, "XA_RBROLLBACK"},
		{[]string{"start", "msg", "fail"}, "join", 409, "XA_RBROLLBACK"},
		// Heuristic decisions.
		{append(prepared, "hcommit"), "commit", 409, "XA_HEURCOM"},
		{append(prepared, "hcommit"), "rollback", 409, "XA_HEURCOM"},
		{append(prepared, "hrollback"), "commit", 409, "XA_HEURRB"},
		{append(prepared, "hrollback"), "rollback", 409, "XA_HEURRB"},
		{append(prepared, "hcommit"), "hrollback", 409, "XAER_PROTO"},
		// Legal moves, for contrast.
		{[]string{"start", "suspend"}, "resume", 200, ""},
		{[]string{"start", "suspend"}, "end", 200, ""},
		{[]string{"start", "suspend"}, "rollback", 200, ""},
		{[]string{"start", "end"}, "join", 200, ""},
		{[]string{"start", "end"}, "commit1", 200, ""},
		{[]string{"start", "msg", "fail"}, "rollback", 200, ""},
		{append(prepared, "hcommit"), "forget", 200, ""},
		{append(prepared, "hrollback"), "forget", 200, ""},
	}
	for i, c := range cases {
		name := fmt.Sprintf("%s after %s", c.verb, strings.Join(c.setup, ","))
		t.Run(name, func(t *testing.T) {
			x := xidJSONText(3, fmt.Sprintf("case-%d", i), "b")
			ts.xaDo(x, c.setup...)
			ts.xaExpect(t, x, c.verb, c.status, c.code)
		})
	}
}

// TestXASequences follows a branch past an error: what the error did to it.
func TestXASequences(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)

	// end(fail) then prepare rolls the branch back: it is gone.
	x := xidJSONText(1, "fail", "b")
	ts.xaDo(x, "start", "msg")
	if r := ts.xaExpect(t, x, "fail", 200, ""); string(r.body) != `{"state":"rollback_only"}`+"\n" {
		t.Fatalf("end(fail): %s", r.body)
	}
	ts.xaExpect(t, x, "prepare", 409, "XA_RBROLLBACK")
	ts.xaExpect(t, x, "rollback", 404, "XAER_NOTA")

	// A heuristic commit publishes the messages; commit answers HEURCOM until forget.
	y := xidJSONText(1, "heur", "b")
	ts.xaDo(y, "start", "msg", "end", "prepare")
	if r := ts.xaExpect(t, y, "hcommit", 200, ""); string(r.body) != `{"state":"heuristically_committed"}`+"\n" {
		t.Fatalf("heuristic: %s", r.body)
	}
	if got := fmt.Sprint(ts.ends("t")); got != "[1]" {
		t.Fatalf("after heuristic commit: ends %s", got)
	}
	if got := ts.recover(); len(got) != 1 {
		t.Fatalf("recover after heuristic: %+v", got) // listed until forgotten
	}
	ts.xaExpect(t, y, "commit", 409, "XA_HEURCOM")
	if r := ts.xaExpect(t, y, "forget", 200, ""); string(r.body) != `{"state":"forgotten"}`+"\n" {
		t.Fatalf("forget: %s", r.body)
	}
	ts.xaExpect(t, y, "commit", 404, "XAER_NOTA")
	if len(ts.recover()) != 0 {
		t.Fatal("forgotten branch recovered")
	}
	if c := ts.txCounter(kindXA, outcomeHeurCommit); c != 1 {
		t.Errorf("heuristic_commit counter %v", c)
	}
	if c := ts.txCounter(kindXA, outcomeRolledBack); c != 1 {
		t.Errorf("rolled_back counter %v (the rollback-only branch)", c)
	}

	// A branch past its timeout answers XA_RBTIMEOUT once, then is unknown.
	z := xidJSONText(1, "slow", "b")
	ts.must(200, "POST", "/v1/xa/start", `{"xid":`+z+`,"timeout_ms":1}`)
	bx := broker.Xid{FormatID: 1, Gtrid: []byte("slow"), Bqual: []byte("b")}
	waitFor(t, "the branch to time out", func() bool {
		st, ok := ts.b.XAState(bx)
		return !ok || st == broker.TxTimedOut
	})
	ts.xaExpect(t, z, "end", 409, "XA_RBTIMEOUT")
	ts.xaExpect(t, z, "rollback", 404, "XAER_NOTA")
	if c := ts.txCounter(kindXA, outcomeTimedOut); c != 1 {
		t.Errorf("timed_out counter %v", c)
	}
}

// TestXARecoverAcrossRestart: prepared branches survive a broker Close and re-Open with their
// messages; active and idle ones are gone.
func TestXARecoverAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	ts := startServerDir(t, dir, Options{})
	ts.createTopic("t", 1)
	p1 := xidJSONText(9, "p1", "b")
	p2 := xidJSONText(9, "p2", "b2")
	ts.xaDo(p1, "start", "msg", "msg", "end", "prepare")
	ts.xaDo(p2, "start", "msg", "end", "prepare")
	ts.xaDo(xidJSONText(9, "idle", "b"), "start", "msg", "end")
	ts.xaDo(xidJSONText(9, "active", "b"), "start", "msg")
	ts.xaDo(xidJSONText(9, "done", "b"), "start", "msg", "end", "prepare", "commit")
	ts.stop()

	ts = startServerDir(t, dir, Options{})
	want := []api.Xid{
		{FormatID: 9, Gtrid: hex.EncodeToString([]byte("p1")), Bqual: hex.EncodeToString([]byte("b"))},
		{FormatID: 9, Gtrid: hex.EncodeToString([]byte("p2")), Bqual: hex.EncodeToString([]byte("b2"))},
	}
	if got := ts.recover(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("recover after restart: %+v, want %+v", got, want)
	}
	if got := fmt.Sprint(ts.ends("t")); got != "[1]" { // only "done"
		t.Fatalf("after restart: ends %s", got)
	}
	ts.xaExpect(t, xidJSONText(9, "idle", "b"), "commit1", 404, "XAER_NOTA")
	ts.xaExpect(t, xidJSONText(9, "active", "b"), "end", 404, "XAER_NOTA")
	r := ts.xaExpect(t, p1, "commit", 200, "")
	var cr api.TxCommitResponse
	decodeJSON(t, r.body, &cr)
	if fmt.Sprint(cr.Offsets) != "[{t 0 1} {t 0 2}]" {
		t.Fatalf("commit after restart: %s", r.body)
	}
	ts.xaExpect(t, p2, "rollback", 200, "")
	if got := values(ts.fetch("t", 0, "offset=0").Messages); got != `"m" "m" "m"` {
		t.Fatalf("t/0 holds %s", got)
	}
	if len(ts.recover()) != 0 {
		t.Fatal("branches left after commit and rollback")
	}
}

// TestXABadInput checks the door: JSON syntax stays invalid_json; the verbs' own fields are
// XAER_INVAL naming the field; messages are checked as in produce.
func TestXABadInput(t *testing.T) {
	ts := startServer(t, Options{MaxBodyBytes: 4096})
	ts.createTopic("t", 1)
	x := xidJSONText(1, "active", "b")
	ts.xaDo(x, "start")
	g65 := strings.Repeat("ab", 65)
	xidWith := func(fields string) string { return `{"xid":{` + fields + `}}` }
	cases := []struct {
		name, verb, body string
		status           int
		code, field      string
	}{
		{"empty body", "start", "", 400, "invalid_json", ""},
		{"malformed json", "start", `{"xid":{"format_id":1,`, 400, "invalid_json", ""},
		{"trailing garbage", "prepare", `{"xid":` + x + `} x`, 400, "invalid_json", ""},
		{"type then syntax error", "commit", `{"xid":5,}`, 400, "invalid_json", ""},
		{"not utf-8", "start", "{\"xid\":\"\xff\"}", 400, "invalid_json", ""},
		{"body an array", "start", `[]`, 400, "XAER_INVAL", "body"},
		{"missing xid", "prepare", `{}`, 400, "XAER_INVAL", "xid"},
		{"missing xid with flags", "end", `{"flags":"success"}`, 400, "XAER_INVAL", "xid"},
		{"xid a string", "start", `{"xid":"XID:1:61:62"}`, 400, "XAER_INVAL", "xid"},
		{"xid null", "start", `{"xid":null}`, 400, "XAER_INVAL", "xid"},
		{"gtrid missing", "start", xidWith(`"format_id":1,"bqual":"62"`), 400, "XAER_INVAL", "xid.gtrid"},
		{"format_id missing", "start", xidWith(`"gtrid":"61","bqual":"62"`), 400, "XAER_INVAL", "xid.format_id"},
		{"gtrid not hex", "start", xidWith(`"format_id":1,"gtrid":"zz","bqual":"62"`), 400, "XAER_INVAL", "xid.gtrid"},
		{"gtrid odd digits", "start", xidWith(`"format_id":1,"gtrid":"abc","bqual":"62"`), 400, "XAER_INVAL", "xid.gtrid"},
		{"gtrid 65 bytes", "start", xidWith(`"format_id":1,"gtrid":"` + g65 + `","bqual":"62"`), 400, "XAER_INVAL", "xid.gtrid"},
		{"gtrid empty", "start", xidWith(`"format_id":1,"gtrid":"","bqual":"62"`), 400, "XAER_INVAL", "xid.gtrid"},
		{"gtrid number", "start", xidWith(`"format_id":1,"gtrid":61,"bqual":"62"`), 400, "XAER_INVAL", "xid.gtrid"},
		{"bqual 65 bytes", "commit", xidWith(`"format_id":1,"gtrid":"61","bqual":"` + g65 + `"`), 400, "XAER_INVAL", "xid.bqual"},
		{"format_id negative", "start", xidWith(`"format_id":-1,"gtrid":"61","bqual":"62"`), 400, "XAER_INVAL", "xid.format_id"},
		{"format_id over int32", "start", xidWith(`"format_id":2147483648,"gtrid":"61","bqual":"62"`), 400, "XAER_INVAL", "xid.format_id"},
		{"format_id string", "start", xidWith(`"format_id":"1","gtrid":"61","bqual":"62"`), 400, "XAER_INVAL", "xid.format_id"},
		{"format_id fraction", "start", xidWith(`"format_id":1.5,"gtrid":"61","bqual":"62"`), 400, "XAER_INVAL", "xid.format_id"},
		{"xid unknown field", "start", xidWith(`"format_id":1,"gtrid":"61","bqual":"62","branch":1`), 400, "XAER_INVAL", "xid.branch"},
		{"xid field twice", "start", xidWith(`"format_id":1,"gtrid":"61","gtrid":"61","bqual":"62"`), 400, "XAER_INVAL", "xid.gtrid"},
		{"unknown start flags", "start", `{"xid":` + x + `,"flags":"tmnoflags"}`, 400, "XAER_INVAL", "flags"},
		{"start flags number", "start", `{"xid":` + x + `,"flags":0}`, 400, "XAER_INVAL", "flags"},
		{"unknown end flags", "end", `{"xid":` + x + `,"flags":"ok"}`, 400, "XAER_INVAL", "flags"},
		{"end flags missing", "end", `{"xid":` + x + `}`, 400, "XAER_INVAL", "flags"},
		{"end flags empty", "end", `{"xid":` + x + `,"flags":""}`, 400, "XAER_INVAL", "flags"},
		{"timeout negative", "start", `{"xid":` + xidJSONText(1, "new", "b") + `,"timeout_ms":-5}`, 400, "XAER_INVAL", "timeout_ms"},
		{"timeout string", "start", `{"xid":` + xidJSONText(1, "new", "b") + `,"timeout_ms":"5"}`, 400, "XAER_INVAL", "timeout_ms"},
		{"one_phase string", "commit", `{"xid":` + x + `,"one_phase":"yes"}`, 400, "XAER_INVAL", "one_phase"},
		{"one_phase null", "commit", `{"xid":` + x + `,"one_phase":null}`, 400, "XAER_INVAL", "one_phase"},
		{"flags on prepare", "prepare", `{"xid":` + x + `,"flags":"noflags"}`, 400, "XAER_INVAL", "flags"},
		{"unknown field", "rollback", `{"xid":` + x + `,"force":true}`, 400, "XAER_INVAL", "force"},
		{"repeated xid", "rollback", `{"xid":` + x + `,"xid":` + x + `}`, 400, "XAER_INVAL", "xid"},
		{"decision unknown", "heuristic", `{"xid":` + x + `,"decision":"maybe"}`, 400, "XAER_INVAL", "decision"},
		{"decision missing", "heuristic", `{"xid":` + x + `}`, 400, "XAER_INVAL", "decision"},
		{"messages missing", "messages", `{"xid":` + x + `}`, 400, "invalid_field", "messages"},
		{"messages empty", "messages", `{"xid":` + x + `,"messages":[]}`, 400, "invalid_field", "messages"},
		{"message without topic", "messages", `{"xid":` + x + `,"messages":[{"value":1}]}`, 400, "invalid_field", "messages[0].topic"},
		{"message bad topic", "messages", `{"xid":` + x + `,"messages":[{"topic":"a/b","value":1}]}`, 400, "invalid_name", "messages[0].topic"},
		{"message partition string", "messages", `{"xid":` + x + `,"messages":[{"topic":"t","value":1,"partition":"0"}]}`, 400, "invalid_field", "messages[0].partition"},
		{"message unknown topic", "messages", `{"xid":` + x + `,"messages":[{"topic":"nope","value":1}]}`, 404, "unknown_topic", ""},
		{"message unknown partition", "messages", `{"xid":` + x + `,"messages":[{"topic":"t","value":1,"partition":5}]}`, 404, "unknown_partition", ""},
		{"messages without xid", "messages", `{"messages":[{"topic":"t","value":1}]}`, 400, "XAER_INVAL", "xid"},
		{"oversize body", "messages", `{"xid":` + x + `,"messages":[{"topic":"t","value":"` + strings.Repeat("x", 5000) + `"}]}`, 413, "payload_too_large", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expectError(t, ts.do("POST", "/v1/xa/"+c.verb, c.body), c.status, c.code, c.field)
		})
	}
	if r := ts.do("POST", "/v1/xa/recover", ""); r.status != 405 {
		t.Errorf("POST recover: %d", r.status)
	}
	// Nothing above changed the branch: it is still active and empty (rdonly once ended).
	ts.xaDo(x, "end")
	if r := ts.xaExpect(t, x, "prepare", 200, ""); !strings.Contains(string(r.body), `"rdonly"`) {
		t.Fatalf("prepare after bad input: %s", r.body)
	}
	// The limits themselves are accepted: 64-byte parts, format_id 0 and max int32, upper-case hex.
	ok := `{"xid":{"format_id":2147483647,"gtrid":"` + strings.Repeat("AB", 64) + `","bqual":"00"}}`
	ts.must(200, "POST", "/v1/xa/start", ok)
	ts.must(200, "POST", "/v1/xa/end", `{"xid":{"format_id":2147483647,"gtrid":"`+strings.Repeat("ab", 64)+`","bqual":"00"},"flags":"success"}`)
	ts.must(200, "POST", "/v1/xa/start", `{"xid":{"format_id":0,"gtrid":"01","bqual":"02"},"flags":"noflags","timeout_ms":0}`)
	if got := fmt.Sprint(ts.ends("t")); got != "[0]" {
		t.Fatalf("bad input stored something: ends %s", got)
	}
}

// BenchmarkXABranchHTTP runs whole XA branches (start, one 1 KiB message, end, prepare,
// two-phase commit: five requests, two fsyncs) over real HTTP against a real broker (fsync
// always) from parallel clients, as BenchmarkProduceHTTP does for a plain produce (issue 4,
// acceptance 5: at least 40% of its rate). One op is one branch.
func BenchmarkXABranchHTTP(b *testing.B) { benchXA(b, false) }

// benchXA drives whole branches (start, one 1 KiB message, end, prepare, commit) from 32
// parallel clients: five requests each, or two with a compound start.
func benchXA(b *testing.B, compound bool) {
	ts := startServerB(b)
	msg := `[{"topic":"bench","value":{"payload":"` + strings.Repeat("x", 1010) + `"}}]`
	tr := &http.Transport{MaxIdleConnsPerHost: 256}
	client := &http.Client{Transport: tr}
	var seq atomic.Int64
	post := func(verb, body string) bool {
		resp, err := client.Post(ts.hs.URL+"/v1/xa/"+verb, "application/json", strings.NewReader(body))
		if err != nil {
			b.Error(err)
			return false
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Errorf("%s: status %d", verb, resp.StatusCode)
			return false
		}
		return true
	}
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			x := fmt.Sprintf(`{"format_id":1,"gtrid":"%016x","bqual":"01"}`, seq.Add(1))
			if compound {
				_ = post("start", `{"xid":`+x+`,"messages":`+msg+`,"end":"success","prepare":true}`) &&
					post("commit", `{"xid":`+x+`}`)
				continue
			}
			_ = post("start", `{"xid":`+x+`}`) &&
				post("messages", `{"xid":`+x+`,"messages":`+msg+`}`) &&
				post("end", `{"xid":`+x+`,"flags":"success"}`) &&
				post("prepare", `{"xid":`+x+`}`) &&
				post("commit", `{"xid":`+x+`}`)
		}
	})
	b.StopTimer()
	tr.CloseIdleConnections()
}
