package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
)

// txCounter reads imago_transactions_total{kind,outcome}.
func (ts *testServer) txCounter(kind, outcome string) float64 {
	ts.t.Helper()
	mfs, err := ts.reg.Gather()
	if err != nil {
		ts.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "imago_transactions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == kind && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	ts.t.Fatalf("no imago_transactions_total{kind=%q,outcome=%q}", kind, outcome)
	return 0
}

func (ts *testServer) beginTx(body string, hdr ...string) string {
	ts.t.Helper()
	r := ts.must(http.StatusCreated, "POST", "/v1/transactions", body, hdr...)
	var out api.TxCreated
	decodeJSON(ts.t, r.body, &out)
	if out.ID == "" {
		ts.t.Fatalf("begin: no id in %s", r.body)
	}
	return out.ID
}

func (ts *testServer) txStatus(id string) api.TxStatus {
	ts.t.Helper()
	r := ts.must(http.StatusOK, "GET", "/v1/transactions/"+id, "")
	var out api.TxStatus
	decodeJSON(ts.t, r.body, &out)
	return out
}

// ends returns the end offset of every partition of topic.
func (ts *testServer) ends(topic string) []int64 {
	ts.t.Helper()
	r := ts.must(http.StatusOK, "GET", "/v1/topics/"+topic, "")
	var info api.Topic
	decodeJSON(ts.t, r.body, &info)
	var out []int64
	for _, p := range info.Partitions {
		out = append(out, p.EndOffset)
	}
	return out
}

func values(msgs []api.Message) string {
	var vs []string
	for _, m := range msgs {
		vs = append(vs, string(m.Value))
	}
	return strings.Join(vs, " ")
}

// TestLocalTxVisibility: while a transaction is open its messages cannot be fetched; after
// commit all can, at consecutive offsets per partition; after rollback none ever can.
func TestLocalTxVisibility(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("a", 2)
	ts.createTopic("b", 1)

	id := ts.beginTx(`{"timeout_ms": 30000}`)
	r := ts.must(200, "POST", "/v1/transactions/"+id+"/messages",
		`{"messages":[{"topic":"a","value":"a0","partition":0},{"topic":"a","value":"a1","partition":1},{"topic":"a","value":"a2","partition":0}]}`)
	if string(r.body) != "{\"messages\":3}\n" {
		t.Fatalf("add: %s", r.body)
	}
	r = ts.must(200, "POST", "/v1/transactions/"+id+"/messages",
		`{"messages":[{"topic":"b","key":"k","value_base64":"AAE=","headers":{"h":"v"}}]}`)
	if string(r.body) != "{\"messages\":4}\n" {
		t.Fatalf("second add: total %s, want 4", r.body)
	}
	// An ordinary produce in between is visible at once; the transaction's messages are not.
	ts.produce("a", `{"messages":[{"value":"plain","partition":0}]}`)
	if got := fmt.Sprint(ts.ends("a"), ts.ends("b")); got != "[1 0] [0]" {
		t.Fatalf("open transaction visible: ends %s", got)
	}
	if st := ts.txStatus(id); st.State != "open" || st.Messages == nil || *st.Messages != 4 || st.CreatedAt == "" {
		t.Fatalf("status while open: %+v", st)
	}

	r = ts.must(200, "POST", "/v1/transactions/"+id+"/commit", "")
	var cr api.TxCommitResponse
	decodeJSON(t, r.body, &cr)
	want := []api.TopicPosition{{Topic: "a", Partition: 0, Offset: 1}, {Topic: "a", Partition: 1, Offset: 0},
		{Topic: "a", Partition: 0, Offset: 2}, {Topic: "b", Partition: 0, Offset: 0}}
	if cr.ID != id || cr.State != "committed" || fmt.Sprint(cr.Offsets) != fmt.Sprint(want) {
		t.Fatalf("commit: %s", r.body)
	}
	if got := values(ts.fetch("a", 0, "offset=0").Messages); got != `"plain" "a0" "a2"` {
		t.Fatalf("a/0 holds %s", got)
	}
	if got := values(ts.fetch("a", 1, "offset=0").Messages); got != `"a1"` {
		t.Fatalf("a/1 holds %s", got)
	}
	if m := ts.fetch("b", 0, "offset=0").Messages; len(m) != 1 || m[0].ValueBase64 == nil || *m[0].ValueBase64 != "AAE=" ||
		m[0].Key == nil || *m[0].Key != "k" || m[0].Headers["h"] != "v" {
		t.Fatalf("b/0 holds %+v", m)
	}
	if st := ts.txStatus(id); st.State != "committed" || fmt.Sprint(st.Offsets) != fmt.Sprint(want) {
		t.Fatalf("status after commit: %+v", st)
	}
	// Finished: a second commit, a rollback or more messages are transaction_not_open.
	for _, verb := range []string{"commit", "rollback"} {
		if e := errorBody(t, ts.must(409, "POST", "/v1/transactions/"+id+"/"+verb, "")); e.Error.Code != "transaction_not_open" {
			t.Errorf("%s after commit: %s", verb, e.Error.Code)
		}
	}
	r = ts.must(409, "POST", "/v1/transactions/"+id+"/messages", `{"messages":[{"topic":"a","value":1}]}`)
	if e := errorBody(t, r); e.Error.Code != "transaction_not_open" {
		t.Errorf("add after commit: %s", e.Error.Code)
	}

	// Rollback: never visible, before or after.
	id2 := ts.beginTx("")
	ts.must(200, "POST", "/v1/transactions/"+id2+"/messages", `{"messages":[{"topic":"a","value":"gone","partition":1},{"topic":"b","value":"gone"}]}`)
	r = ts.must(200, "POST", "/v1/transactions/"+id2+"/rollback", "")
	var rb api.TxStatus
	decodeJSON(t, r.body, &rb)
	if rb.ID != id2 || rb.State != "rolled_back" {
		t.Fatalf("rollback: %s", r.body)
	}
	if e := errorBody(t, ts.must(409, "POST", "/v1/transactions/"+id2+"/commit", "")); e.Error.Code != "transaction_not_open" {
		t.Errorf("commit after rollback: %s", e.Error.Code)
	}
	if st := ts.txStatus(id2); st.State != "rolled_back" {
		t.Fatalf("status after rollback: %+v", st)
	}
	ts.produce("a", `{"messages":[{"value":"after","partition":1}]}`)
	if got := values(ts.fetch("a", 1, "offset=0").Messages); got != `"a1" "after"` {
		t.Fatalf("a/1 after rollback holds %s", got)
	}
	if got := fmt.Sprint(ts.ends("b")); got != "[1]" {
		t.Fatalf("b after rollback: ends %s", got)
	}
	if c := ts.txCounter(kindLocal, outcomeCommitted); c != 1 {
		t.Errorf("committed counter %v", c)
	}
	if c := ts.txCounter(kindLocal, outcomeRolledBack); c != 1 {
		t.Errorf("rolled_back counter %v", c)
	}
}

// TestLocalTxTimeout: a transaction past its timeout is rolled back; commit then answers 409
// transaction_timed_out, and its messages never appear.
func TestLocalTxTimeout(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	r := ts.must(http.StatusCreated, "POST", "/v1/transactions", `{"timeout_ms": 20}`)
	var created api.TxCreated
	decodeJSON(t, r.body, &created)
	if created.TimeoutMS != 20 {
		t.Fatalf("begin: %s", r.body)
	}
	id := created.ID
	// Adding may race the timeout: either it is added or the transaction has timed out.
	r = ts.do("POST", "/v1/transactions/"+id+"/messages", `{"messages":[{"topic":"t","value":"late"}]}`)
	if r.status != 200 && (r.status != 409 || errorBody(t, r).Error.Code != "transaction_timed_out") {
		t.Fatalf("add: %d %s", r.status, r.body)
	}
	waitFor(t, "the transaction to time out", func() bool { return ts.txStatus(id).State == "timed_out" })
	for i := 0; i < 2; i++ { // and it stays so
		r = ts.must(409, "POST", "/v1/transactions/"+id+"/commit", "")
		if e := errorBody(t, r); e.Error.Code != "transaction_timed_out" {
			t.Fatalf("commit after timeout: %s %s", e.Error.Code, e.Error.Message)
		}
	}
	if got := fmt.Sprint(ts.ends("t")); got != "[0]" {
		t.Fatalf("timed-out transaction visible: ends %s", got)
	}
	if c := ts.txCounter(kindLocal, outcomeTimedOut); c != 2 {
		t.Errorf("timed_out counter %v, want 2 (one per commit told)", c)
	}
	if st := ts.txStatus(id); st.State != "timed_out" || *st.Messages != 0 {
		t.Errorf("status: %+v", st)
	}
}

// TestLocalTxErrors covers unknown ids, topics and names, and the bad-input cases of the
// transaction endpoints.
func TestLocalTxErrors(t *testing.T) {
	ts := startServer(t, Options{MaxBodyBytes: 4096})
	ts.createTopic("t", 2)
	id := ts.beginTx(`{}`)
	msgs := "/v1/transactions/" + id + "/messages"
	const unknown = "/v1/transactions/0123456789abcdef01234567"
	cases := []struct {
		name, method, path, body string
		status                   int
		code, field              string
	}{
		{"status of unknown id", "GET", unknown, "", 404, "unknown_transaction", ""},
		{"commit unknown id", "POST", unknown + "/commit", "", 404, "unknown_transaction", ""},
		{"rollback unknown id", "POST", unknown + "/rollback", "", 404, "unknown_transaction", ""},
		{"add to unknown id", "POST", unknown + "/messages", `{"messages":[{"topic":"t","value":1}]}`, 404, "unknown_transaction", ""},
		{"id with bad characters", "GET", "/v1/transactions/a.b", "", 400, "invalid_parameter", "id"},
		{"id too long", "GET", "/v1/transactions/" + strings.Repeat("a", 129), "", 400, "invalid_parameter", "id"},
		{"begin malformed json", "POST", "/v1/transactions", `{"timeout_ms":`, 400, "invalid_json", ""},
		{"begin timeout string", "POST", "/v1/transactions", `{"timeout_ms":"30s"}`, 400, "invalid_field", "timeout_ms"},
		{"begin timeout negative", "POST", "/v1/transactions", `{"timeout_ms":-1}`, 400, "invalid_field", "timeout_ms"},
		{"begin timeout fraction", "POST", "/v1/transactions", `{"timeout_ms":1.5}`, 400, "invalid_field", "timeout_ms"},
		{"begin timeout over an hour", "POST", "/v1/transactions", `{"timeout_ms":3600001}`, 400, "invalid_field", "timeout_ms"},
		{"begin timeout huge", "POST", "/v1/transactions", `{"timeout_ms":99999999999999999999999}`, 400, "invalid_field", "timeout_ms"},
		{"begin unknown field", "POST", "/v1/transactions", `{"timeout":1}`, 400, "invalid_field", "timeout"},
		{"begin body an array", "POST", "/v1/transactions", `[]`, 400, "invalid_field", "body"},
		{"add empty body", "POST", msgs, "", 400, "invalid_json", ""},
		{"add malformed json", "POST", msgs, `{"messages":[{"topic":"t","value":1}`, 400, "invalid_json", ""},
		{"add type then syntax error", "POST", msgs, `{"messages":[{"topic":5,}]}`, 400, "invalid_json", ""},
		{"add messages missing", "POST", msgs, `{}`, 400, "invalid_field", "messages"},
		{"add messages empty", "POST", msgs, `{"messages":[]}`, 400, "invalid_field", "messages"},
		{"add messages not array", "POST", msgs, `{"messages":{}}`, 400, "invalid_field", "messages"},
		{"add xid not allowed", "POST", msgs, `{"xid":{},"messages":[{"topic":"t","value":1}]}`, 400, "invalid_field", "xid"},
		{"add topic missing", "POST", msgs, `{"messages":[{"value":1}]}`, 400, "invalid_field", "messages[0].topic"},
		{"add topic number", "POST", msgs, `{"messages":[{"topic":1,"value":1}]}`, 400, "invalid_field", "messages[0].topic"},
		{"add topic bad name", "POST", msgs, `{"messages":[{"topic":"t","value":1},{"topic":"a b","value":1}]}`, 400, "invalid_name", "messages[1].topic"},
		{"add topic twice", "POST", msgs, `{"messages":[{"topic":"t","topic":"t","value":1}]}`, 400, "invalid_field", "messages[0].topic"},
		{"add no value", "POST", msgs, `{"messages":[{"topic":"t"}]}`, 400, "invalid_field", "messages[0].value"},
		{"add key number", "POST", msgs, `{"messages":[{"topic":"t","key":1,"value":1}]}`, 400, "invalid_field", "messages[0].key"},
		{"add bad base64", "POST", msgs, `{"messages":[{"topic":"t","value_base64":"!"}]}`, 400, "invalid_field", "messages[0].value_base64"},
		{"add unknown message field", "POST", msgs, `{"messages":[{"topic":"t","value":1,"x":1}]}`, 400, "invalid_field", "messages[0].x"},
		{"add unknown topic", "POST", msgs, `{"messages":[{"topic":"t","value":1},{"topic":"nope","value":1}]}`, 404, "unknown_topic", ""},
		{"add unknown partition", "POST", msgs, `{"messages":[{"topic":"t","value":1,"partition":2}]}`, 404, "unknown_partition", ""},
		{"add oversize body", "POST", msgs, `{"messages":[{"topic":"t","value":"` + strings.Repeat("x", 5000) + `"}]}`, 413, "payload_too_large", ""},
		{"get with post", "POST", "/v1/transactions/" + id, "", 405, "method_not_allowed", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expectError(t, ts.do(c.method, c.path, c.body), c.status, c.code, c.field)
		})
	}
	// None of that touched the transaction: it is open and empty, and commits nothing.
	if st := ts.txStatus(id); st.State != "open" || *st.Messages != 0 {
		t.Fatalf("after bad input: %+v", st)
	}
	r := ts.must(200, "POST", "/v1/transactions/"+id+"/commit", "")
	if string(r.body) != `{"id":"`+id+`","state":"committed","offsets":[]}`+"\n" {
		t.Fatalf("empty commit: %s", r.body)
	}
	if got := fmt.Sprint(ts.ends("t")); got != "[0 0]" {
		t.Fatalf("ends %s", got)
	}
}

// TestLocalTxAutoCreate: with auto-create on, a transaction's unknown topics are created.
func TestLocalTxAutoCreate(t *testing.T) {
	ts := startServer(t, Options{AutoCreateTopics: true, DefaultPartitions: 3})
	id := ts.beginTx("")
	ts.must(200, "POST", "/v1/transactions/"+id+"/messages", `{"messages":[{"topic":"new.one","value":1},{"topic":"new.two","value":2}]}`)
	ts.must(200, "POST", "/v1/transactions/"+id+"/commit", "")
	for _, topic := range []string{"new.one", "new.two"} {
		if ends := ts.ends(topic); len(ends) != 3 {
			t.Errorf("%s: %d partitions", topic, len(ends))
		}
	}
}

// TestTxRights: transactions and XA need a token with a produce pattern; adding messages
// needs the produce right on each message's topic; heuristic decisions need admin and are
// logged with the token's name.
func TestTxRights(t *testing.T) {
	var logs testenv.SyncBuffer
	ts := startServer(t, Options{
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Tokens: []Token{
			{Name: "payments", Token: "p-secret", Produce: []string{"pay.*"}},
			{Name: "reader", Token: "r-secret", Consume: []string{"*"}},
			{Name: "ops", Token: "a-secret", Admin: true},
		},
	})
	pay := []string{"Authorization", "Bearer p-secret"}
	reader := []string{"Authorization", "Bearer r-secret"}
	admin := []string{"Authorization", "Bearer a-secret"}
	ts.createTopic("pay.out", 1, admin...)
	ts.createTopic("audit", 1, admin...)

	// Local transactions.
	if r := ts.do("POST", "/v1/transactions", ""); r.status != 401 {
		t.Fatalf("begin without token: %d", r.status)
	}
	if r := ts.do("POST", "/v1/transactions", "", reader...); r.status != 403 || errorBody(t, r).Error.Code != "forbidden" {
		t.Fatalf("begin with a consume-only token: %d %s", r.status, r.body)
	}
	if r := ts.do("POST", "/v1/transactions", "", admin...); r.status != 403 {
		t.Fatalf("begin with an admin token without produce patterns: %d %s", r.status, r.body)
	}
	id := ts.beginTx("", pay...)
	r := ts.do("POST", "/v1/transactions/"+id+"/messages", `{"messages":[{"topic":"pay.out","value":1},{"topic":"audit","value":2}]}`, pay...)
	if e := errorBody(t, r); r.status != 403 || e.Error.Code != "forbidden" || e.Error.Field != "messages[1].topic" {
		t.Fatalf("add to a topic without the right: %d %s", r.status, r.body)
	}
	ts.must(200, "POST", "/v1/transactions/"+id+"/messages", `{"messages":[{"topic":"pay.out","value":1}]}`, pay...)
	ts.must(200, "POST", "/v1/transactions/"+id+"/commit", "", pay...)

	// XA: the verbs need a producer; messages the topic right; heuristic admin.
	x := xidJSONText(1, "g1", "b1")
	if r := ts.do("POST", "/v1/xa/start", `{"xid":`+x+`}`, reader...); r.status != 403 {
		t.Fatalf("start with a consume-only token: %d", r.status)
	}
	if r := ts.do("GET", "/v1/xa/recover", "", reader...); r.status != 403 {
		t.Fatalf("recover with a consume-only token: %d", r.status)
	}
	ts.must(200, "POST", "/v1/xa/start", `{"xid":`+x+`}`, pay...)
	if r := ts.do("POST", "/v1/xa/messages", `{"xid":`+x+`,"messages":[{"topic":"audit","value":1}]}`, pay...); r.status != 403 {
		t.Fatalf("xa messages to a topic without the right: %d", r.status)
	}
	ts.must(200, "POST", "/v1/xa/messages", `{"xid":`+x+`,"messages":[{"topic":"pay.out","value":1}]}`, pay...)
	ts.must(200, "POST", "/v1/xa/end", `{"xid":`+x+`,"flags":"success"}`, pay...)
	ts.must(200, "POST", "/v1/xa/prepare", `{"xid":`+x+`}`, pay...)
	if r := ts.do("POST", "/v1/xa/heuristic", `{"xid":`+x+`,"decision":"rollback"}`, pay...); r.status != 403 {
		t.Fatalf("heuristic with a producer token: %d", r.status)
	}
	ts.must(200, "POST", "/v1/xa/heuristic", `{"xid":`+x+`,"decision":"rollback"}`, admin...)
	if s := logs.String(); !strings.Contains(s, `msg="heuristic decision"`) || !strings.Contains(s, "by=ops") ||
		!strings.Contains(s, "decision=rollback") || !strings.Contains(s, "xid=XID:1:6731:6231") || strings.Contains(s, "a-secret") {
		t.Fatalf("heuristic log:\n%s", s)
	}
}

// FuzzDecodeTxBody checks that the transaction decoder never panics, does not modify its
// input, answers only 400s with the documented codes, and accepts only valid JSON whose
// xid meets the X/Open limits.
func FuzzDecodeTxBody(f *testing.F) {
	for _, s := range []string{
		`{"xid":{"format_id":1,"gtrid":"0a","bqual":"ff"},"messages":[{"topic":"t","value":1}]}`,
		`{"xid":{"format_id":0,"gtrid":"` + strings.Repeat("ab", 64) + `","bqual":"01"},"flags":"join","timeout_ms":10}`,
		`{"xid":{"format_id":2147483647,"gtrid":"AB","bqual":"cd"},"one_phase":true,"decision":"commit"}`,
		`{"messages":[{"topic":"a.b","key":"k","value_base64":"AAE=","headers":{"h":"v"},"partition":1}]}`,
		`{"timeout_ms":30000}`, ``, `{}`, `[]`, `{"xid":{"gtrid":"0"}}`, `{"xid":1,}`,
	} {
		f.Add([]byte(s))
	}
	spec := txSpec{xa: true, allowed: tfXid | tfFlags | tfTimeout | tfOnePhase | tfDecision | tfMessages, example: "{}"}
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		out, err := decodeTxBody(body, spec)
		if !bytes.Equal(body, orig) {
			t.Fatal("the decoder modified its input")
		}
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.status != 400 || ae.message == "" {
				t.Fatalf("error %v is not a 400 with a message", err)
			}
			switch ae.code {
			case "invalid_json", "invalid_field", "invalid_name", "XAER_INVAL":
			default:
				t.Fatalf("code %q", ae.code)
			}
			if ae.code != "invalid_json" && !json.Valid(body) {
				t.Fatalf("%s for a body that is not JSON: %v", ae.code, err)
			}
			return
		}
		if len(bytes.TrimSpace(body)) > 0 && !json.Valid(body) {
			t.Fatalf("accepted a body that is not JSON: %q", body)
		}
		if out.seen&tfXid != 0 {
			if err := out.xid.Validate(); err != nil {
				t.Fatalf("accepted xid %v: %v", out.xid, err)
			}
		}
		for i, m := range out.msgs {
			if !broker.ValidName(m.Topic) {
				t.Fatalf("message %d: topic %q", i, m.Topic)
			}
			if m.ValueJSON && !json.Valid(m.Value) {
				t.Fatalf("message %d: value %q is not JSON", i, m.Value)
			}
		}
	})
}

// Without auth, an operator's heuristic decision is logged as made by "anonymous", as a resolve
// of a global transaction records it: it was logged with an empty by=.
func TestHeuristicByAnonymous(t *testing.T) {
	var logs testenv.SyncBuffer
	ts := startServer(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil)), AutoCreateTopics: true})
	x := xidJSONText(7, "g7", "b7")
	ts.must(200, "POST", "/v1/xa/start", `{"xid":`+x+`}`)
	ts.must(200, "POST", "/v1/xa/messages", `{"xid":`+x+`,"messages":[{"topic":"pay.out","value":1}]}`)
	ts.must(200, "POST", "/v1/xa/end", `{"xid":`+x+`,"flags":"success"}`)
	ts.must(200, "POST", "/v1/xa/prepare", `{"xid":`+x+`}`)
	ts.must(200, "POST", "/v1/xa/heuristic", `{"xid":`+x+`,"decision":"rollback"}`)
	if s := logs.String(); !strings.Contains(s, `msg="heuristic decision"`) || !strings.Contains(s, "by=anonymous") {
		t.Fatalf("heuristic log:\n%s", s)
	}
}
