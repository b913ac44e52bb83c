package gateway

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestBadInput sends each kind of malformed request and checks the status and error code
// (docs/design.md, invariant 7). The stored data must be untouched after.
func TestBadInput(t *testing.T) {
	ts := startServer(t, Options{MaxBodyBytes: 4096})
	ts.createTopic("orders", 2)
	ts.produce("orders", `{"messages":[{"value":1,"partition":0},{"value":2,"partition":0}]}`)

	const msgs = "/v1/topics/orders/messages"
	const fetch0 = "/v1/topics/orders/partitions/0/messages"
	big := `{"messages":[{"value":"` + strings.Repeat("x", 5000) + `"}]}`
	cases := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		code                     string
		field                    string
	}{
		// produce body
		{"empty body", "POST", msgs, "", nil, 400, "invalid_json", ""},
		{"malformed json", "POST", msgs, `{"messages":[{"value":1}`, nil, 400, "invalid_json", ""},
		{"trailing garbage", "POST", msgs, `{"messages":[{"value":1}]} x`, nil, 400, "invalid_json", ""},
		{"bad literal in value", "POST", msgs, `{"messages":[{"value":tru}]}`, nil, 400, "invalid_json", ""},
		{"not utf-8", "POST", msgs, "{\"messages\":[{\"value\":\"\xff\"}]}", nil, 400, "invalid_json", ""},
		{"type error then syntax error", "POST", msgs, `{"messages":[{"key":5,}]}`, nil, 400, "invalid_json", ""},
		{"body is an array", "POST", msgs, `[1]`, nil, 400, "invalid_field", "body"},
		{"messages missing", "POST", msgs, `{}`, nil, 400, "invalid_field", "messages"},
		{"messages not array", "POST", msgs, `{"messages":{}}`, nil, 400, "invalid_field", "messages"},
		{"messages empty", "POST", msgs, `{"messages":[]}`, nil, 400, "invalid_field", "messages"},
		{"unknown top field", "POST", msgs, `{"messages":[{"value":1}],"msgs":1}`, nil, 400, "invalid_field", "msgs"},
		{"message not object", "POST", msgs, `{"messages":[1]}`, nil, 400, "invalid_field", "messages[0]"},
		{"key is number", "POST", msgs, `{"messages":[{"key":5,"value":1}]}`, nil, 400, "invalid_field", "messages[0].key"},
		{"partition is string", "POST", msgs, `{"messages":[{"value":1},{"value":1,"partition":"1"}]}`, nil, 400, "invalid_field", "messages[1].partition"},
		{"partition negative", "POST", msgs, `{"messages":[{"value":1,"partition":-1}]}`, nil, 400, "invalid_field", "messages[0].partition"},
		{"partition fraction", "POST", msgs, `{"messages":[{"value":1,"partition":1.5}]}`, nil, 400, "invalid_field", "messages[0].partition"},
		{"partition huge", "POST", msgs, `{"messages":[{"value":1,"partition":99999999999999999999}]}`, nil, 400, "invalid_field", "messages[0].partition"},
		{"headers not object", "POST", msgs, `{"messages":[{"value":1,"headers":[]}]}`, nil, 400, "invalid_field", "messages[0].headers"},
		{"header value number", "POST", msgs, `{"messages":[{"value":1,"headers":{"a":1}}]}`, nil, 400, "invalid_field", "messages[0].headers.a"},
		{"no value", "POST", msgs, `{"messages":[{"key":"k"}]}`, nil, 400, "invalid_field", "messages[0].value"},
		{"both values", "POST", msgs, `{"messages":[{"value":1,"value_base64":"AA=="}]}`, nil, 400, "invalid_field", "messages[0].value"},
		{"bad base64", "POST", msgs, `{"messages":[{"value_base64":"!!"}]}`, nil, 400, "invalid_field", "messages[0].value_base64"},
		{"unknown message field", "POST", msgs, `{"messages":[{"vaule":1}]}`, nil, 400, "invalid_field", "messages[0].vaule"},
		{"repeated field", "POST", msgs, `{"messages":[{"value":1,"value":2}]}`, nil, 400, "invalid_field", "messages[0].value"},
		{"oversize body", "POST", msgs, big, nil, 413, "payload_too_large", ""},
		{"idempotency key too long", "POST", msgs, `{"messages":[{"value":1}]}`, []string{"Idempotency-Key", strings.Repeat("k", 256)}, 400, "invalid_idempotency_key", ""},
		{"idempotency key not printable", "POST", msgs, `{"messages":[{"value":1}]}`, []string{"Idempotency-Key", "a\tb"}, 400, "invalid_idempotency_key", ""},
		{"unknown partition on produce", "POST", msgs, `{"messages":[{"value":1,"partition":2}]}`, nil, 404, "unknown_partition", ""},
		{"unknown topic on produce", "POST", "/v1/topics/nope/messages", `{"messages":[{"value":1}]}`, nil, 404, "unknown_topic", ""},
		{"bad topic name on produce", "POST", "/v1/topics/a$b/messages", `{"messages":[{"value":1}]}`, nil, 400, "invalid_name", ""},
		{"topic name too long", "POST", "/v1/topics/" + strings.Repeat("a", 250) + "/messages", `{"messages":[{"value":1}]}`, nil, 400, "invalid_name", ""},
		// fetch parameters
		{"offset missing", "GET", fetch0, "", nil, 400, "invalid_parameter", "offset"},
		{"offset negative", "GET", fetch0 + "?offset=-1", "", nil, 400, "invalid_parameter", "offset"},
		{"offset not numeric", "GET", fetch0 + "?offset=abc", "", nil, 400, "invalid_parameter", "offset"},
		{"offset overflows int64", "GET", fetch0 + "?offset=99999999999999999999", "", nil, 400, "invalid_parameter", "offset"},
		{"offset past the end", "GET", fetch0 + "?offset=1000000", "", nil, 416, "offset_out_of_range", ""},
		{"offset huge but valid int64", "GET", fetch0 + "?offset=9223372036854775807", "", nil, 416, "offset_out_of_range", ""},
		{"offset twice", "GET", fetch0 + "?offset=0&offset=1", "", nil, 400, "invalid_parameter", "offset"},
		{"max_messages zero", "GET", fetch0 + "?offset=0&max_messages=0", "", nil, 400, "invalid_parameter", "max_messages"},
		{"max_messages too big", "GET", fetch0 + "?offset=0&max_messages=10001", "", nil, 400, "invalid_parameter", "max_messages"},
		{"max_bytes too big", "GET", fetch0 + "?offset=0&max_bytes=67108865", "", nil, 400, "invalid_parameter", "max_bytes"},
		{"wait_ms too long", "GET", fetch0 + "?offset=0&wait_ms=30001", "", nil, 400, "invalid_parameter", "wait_ms"},
		{"wait_ms not numeric", "GET", fetch0 + "?offset=0&wait_ms=1s", "", nil, 400, "invalid_parameter", "wait_ms"},
		{"bad query escape", "GET", fetch0 + "?offset=%zz", "", nil, 400, "invalid_parameter", ""},
		{"partition not numeric", "GET", "/v1/topics/orders/partitions/x/messages?offset=0", "", nil, 400, "invalid_parameter", "partition"},
		{"partition negative", "GET", "/v1/topics/orders/partitions/-1/messages?offset=0", "", nil, 400, "invalid_parameter", "partition"},
		{"unknown partition on fetch", "GET", "/v1/topics/orders/partitions/7/messages?offset=0", "", nil, 404, "unknown_partition", ""},
		{"unknown topic on fetch", "GET", "/v1/topics/nope/partitions/0/messages?offset=0", "", nil, 404, "unknown_topic", ""},
		{"bad topic name on fetch", "GET", "/v1/topics/a*b/partitions/0/messages?offset=0", "", nil, 400, "invalid_name", ""},
		// topics
		{"create malformed json", "PUT", "/v1/topics/t1", `{"partitions":`, nil, 400, "invalid_json", ""},
		{"create empty body", "PUT", "/v1/topics/t1", ``, nil, 400, "invalid_json", ""},
		{"create partitions string", "PUT", "/v1/topics/t1", `{"partitions":"4"}`, nil, 400, "invalid_field", "partitions"},
		{"create partitions missing", "PUT", "/v1/topics/t1", `{}`, nil, 400, "invalid_field", "partitions"},
		{"create partitions zero", "PUT", "/v1/topics/t1", `{"partitions":0}`, nil, 400, "invalid_field", "partitions"},
		{"create partitions too many", "PUT", "/v1/topics/t1", `{"partitions":10001}`, nil, 400, "invalid_field", "partitions"},
		{"create unknown field", "PUT", "/v1/topics/t1", `{"partitions":1,"replicas":3}`, nil, 400, "invalid_field", ""},
		{"create negative retention", "PUT", "/v1/topics/t1", `{"partitions":1,"retention_ms":-1}`, nil, 400, "invalid_field", "retention_ms"},
		{"create bad name", "PUT", "/v1/topics/bad%20name", `{"partitions":1}`, nil, 400, "invalid_name", ""},
		{"create oversize body", "PUT", "/v1/topics/t1", `{"partitions":1,"x":"` + strings.Repeat("y", 5000) + `"}`, nil, 413, "payload_too_large", ""},
		{"create with other config", "PUT", "/v1/topics/orders", `{"partitions":3}`, nil, 409, "topic_exists", ""},
		{"describe unknown topic", "GET", "/v1/topics/nope", "", nil, 404, "unknown_topic", ""},
		// routing
		{"unknown route", "GET", "/v2/nothing", "", nil, 404, "not_found", ""},
		{"wrong method", "DELETE", "/v1/topics/orders", "", nil, 405, "method_not_allowed", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expectError(t, ts.do(c.method, c.path, c.body, c.hdr...), c.status, c.code, c.field)
		})
	}

	// Nothing above stored anything: the two messages are all there is.
	got := ts.fetch("orders", 0, "offset=0")
	if len(got.Messages) != 2 || got.EndOffset != 2 {
		t.Fatalf("after bad input: %d messages, end %d; want 2, 2", len(got.Messages), got.EndOffset)
	}
	if got := ts.fetch("orders", 1, "offset=0"); got.EndOffset != 0 {
		t.Fatalf("partition 1 end %d, want 0", got.EndOffset)
	}
	if r := ts.do("GET", "/v1/topics/t1", ""); r.status != http.StatusNotFound {
		t.Fatalf("topic t1 exists after bad creates: %d %s", r.status, r.body)
	}
	// 405 names the allowed methods.
	if r := ts.do("DELETE", "/v1/topics/orders", ""); r.header.Get("Allow") != "GET, PUT" {
		t.Errorf("Allow %q, want %q", r.header.Get("Allow"), "GET, PUT")
	}
}

// TestOffsetOutOfRangeBody checks that a 416 carries start_offset and end_offset.
func TestOffsetOutOfRangeBody(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("t", 1)
	ts.produce("t", `{"messages":[{"value":1},{"value":2},{"value":3}]}`)
	r := ts.do("GET", "/v1/topics/t/partitions/0/messages?offset=10", "")
	if r.status != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	e := errorBody(t, r)
	if e.Error.Code != "offset_out_of_range" || e.StartOffset == nil || e.EndOffset == nil || *e.StartOffset != 0 || *e.EndOffset != 3 {
		t.Fatalf("416 body %s", r.body)
	}
	// The end itself is not out of range: it is where a consumer waits.
	if got := ts.fetch("t", 0, "offset=3"); len(got.Messages) != 0 || got.NextOffset != 3 || got.EndOffset != 3 {
		t.Fatalf("fetch at end: %+v", got)
	}
}

// TestPanicRecovered checks that a panicking handler answers 500 with a JSON error and the
// server keeps serving.
func TestPanicRecovered(t *testing.T) {
	ts := startServer(t, Options{})
	ts.s.router.Get("/test-panic", ts.s.wrap("/test-panic", rightNone, func(w http.ResponseWriter, r *http.Request) error {
		panic("boom")
	}))
	r := ts.do("GET", "/test-panic", "")
	if r.status != http.StatusInternalServerError || errorBody(t, r).Error.Code != "internal_error" {
		t.Fatalf("panic: %d %s", r.status, r.body)
	}
	ts.must(http.StatusOK, "GET", "/healthz", "")
}

// TestOversizeChunkedBody checks the 413 when the body has no Content-Length and the limit
// is found while reading.
func TestOversizeChunkedBody(t *testing.T) {
	ts := startServer(t, Options{MaxBodyBytes: 1024})
	ts.createTopic("t", 1)
	body := io.MultiReader(strings.NewReader(`{"messages":[{"value":"`), strings.NewReader(strings.Repeat("x", 4096)+`"}]}`))
	req, _ := http.NewRequest("POST", ts.hs.URL+"/v1/topics/t/messages", body)
	resp, err := ts.hs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, body: b}
	if req.ContentLength != 0 || r.status != http.StatusRequestEntityTooLarge || errorBody(t, r).Error.Code != "payload_too_large" {
		t.Fatalf("chunked oversize: content-length %d, %d %s", req.ContentLength, r.status, r.body)
	}
}
