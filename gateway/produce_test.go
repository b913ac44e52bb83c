package gateway

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
)

// TestProduceFetchRoundTrip produces JSON values, base64 values, keys and headers and reads
// them back exactly.
func TestProduceFetchRoundTrip(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("pay", 1)
	body := `{"messages":[
		{"key":"acct-42","value":{"amount": 100, "cur":"EUR", "tags":[1, 2, null]},"headers":{"z":"last","a":"first \"q\" \u00e9"}},
		{"value_base64":"` + base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 0xff}) + `"},
		{"key":"","value":null},
		{"value":"tab\tand \u2028 newline\n"},
		{"key":"k\u0000\"\\","value":-1.5e3,"partition":0}
	]}`
	before := time.Now().Add(-time.Second)
	res := ts.produce("pay", body)
	if len(res.Offsets) != 5 || res.Duplicate {
		t.Fatalf("produce: %+v", res)
	}
	for i, p := range res.Offsets {
		if p.Partition != 0 || p.Offset != int64(i) {
			t.Fatalf("offset %d: %+v", i, p)
		}
	}
	got := ts.fetch("pay", 0, "offset=0")
	if len(got.Messages) != 5 || got.NextOffset != 5 || got.EndOffset != 5 || got.StartOffset != 0 {
		t.Fatalf("fetch: %+v", got)
	}
	str := func(s string) *string { return &s }
	want := []api.Message{
		{Key: str("acct-42"), Value: json.RawMessage(`{"amount":100,"cur":"EUR","tags":[1,2,null]}`),
			Headers: map[string]string{"a": "first \"q\" é", "z": "last"}},
		{ValueBase64: str("AAEC/w==")},
		{Key: str(""), Value: json.RawMessage(`null`)},
		{Value: json.RawMessage(`"tab\tand \u2028 newline\n"`)},
		{Key: str("k\x00\"\\"), Value: json.RawMessage(`-1.5e3`)},
	}
	for i, m := range got.Messages {
		w := want[i]
		if m.Topic != "pay" || m.Partition != 0 || m.Offset != int64(i) {
			t.Errorf("message %d: topic/partition/offset %s/%d/%d", i, m.Topic, m.Partition, m.Offset)
		}
		if (m.Key == nil) != (w.Key == nil) || (m.Key != nil && *m.Key != *w.Key) {
			t.Errorf("message %d: key %v, want %v", i, m.Key, w.Key)
		}
		if !bytes.Equal(m.Value, w.Value) {
			t.Errorf("message %d: value %s, want %s", i, m.Value, w.Value)
		}
		if (m.ValueBase64 == nil) != (w.ValueBase64 == nil) || (m.ValueBase64 != nil && *m.ValueBase64 != *w.ValueBase64) {
			t.Errorf("message %d: value_base64 %v, want %v", i, m.ValueBase64, w.ValueBase64)
		}
		if len(m.Headers) != len(w.Headers) {
			t.Errorf("message %d: headers %v, want %v", i, m.Headers, w.Headers)
		}
		for k, v := range w.Headers {
			if m.Headers[k] != v {
				t.Errorf("message %d: header %q = %q, want %q", i, k, m.Headers[k], v)
			}
		}
		ts, err := time.Parse("2006-01-02T15:04:05.000Z", m.Timestamp)
		if err != nil || ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
			t.Errorf("message %d: timestamp %q (%v)", i, m.Timestamp, err)
		}
	}
	// Headers come back sorted by name, as documented.
	r := ts.must(http.StatusOK, "GET", "/v1/topics/pay/partitions/0/messages?offset=0&max_messages=1", "")
	if !bytes.Contains(r.body, []byte(`"headers":{"a":"first \"q\" é","z":"last"}`)) {
		t.Errorf("headers not sorted: %s", r.body)
	}
	// max_messages and max_bytes bound the answer; next_offset continues.
	if got := ts.fetch("pay", 0, "offset=1&max_messages=2"); len(got.Messages) != 2 || got.NextOffset != 3 {
		t.Errorf("max_messages=2: %d messages, next %d", len(got.Messages), got.NextOffset)
	}
	if got := ts.fetch("pay", 0, "offset=0&max_bytes=1"); len(got.Messages) != 1 || got.NextOffset != 1 {
		t.Errorf("max_bytes=1: %d messages, next %d (want one message even when larger)", len(got.Messages), got.NextOffset)
	}
}

// TestIdempotencyKey checks that a repeat returns the first offsets with duplicate:true and
// appends nothing, also after the broker is closed and reopened on the same directory.
func TestIdempotencyKey(t *testing.T) {
	dir := t.TempDir()
	ts := startServerDir(t, dir, Options{})
	ts.createTopic("settle", 3)
	body := `{"messages":[{"key":"a","value":1},{"value":2,"partition":2}]}`
	first := ts.produce("settle", body, "Idempotency-Key", "transfer-0001")
	if first.Duplicate || len(first.Offsets) != 2 {
		t.Fatalf("first: %+v", first)
	}
	again := ts.produce("settle", body, "Idempotency-Key", "transfer-0001")
	if !again.Duplicate || fmt.Sprint(again.Offsets) != fmt.Sprint(first.Offsets) {
		t.Fatalf("repeat: %+v, want offsets %+v with duplicate", again, first.Offsets)
	}
	// Same key, different request: 409.
	r := ts.do("POST", "/v1/topics/settle/messages", `{"messages":[{"value":3}]}`, "Idempotency-Key", "transfer-0001")
	if r.status != http.StatusConflict || errorBody(t, r).Error.Code != "idempotency_key_reused" {
		t.Fatalf("reused key: %d %s", r.status, r.body)
	}
	countCopies := func(ts *testServer) int {
		n := 0
		for p := 0; p < 3; p++ {
			n += len(ts.fetch("settle", p, "offset=0").Messages)
		}
		return n
	}
	if n := countCopies(ts); n != 2 {
		t.Fatalf("topic holds %d messages, want 2", n)
	}

	ts.stop()
	ts2 := startServerDir(t, dir, Options{})
	after := ts2.produce("settle", body, "Idempotency-Key", "transfer-0001")
	if !after.Duplicate || fmt.Sprint(after.Offsets) != fmt.Sprint(first.Offsets) {
		t.Fatalf("repeat after reopen: %+v, want offsets %+v with duplicate", after, first.Offsets)
	}
	if n := countCopies(ts2); n != 2 {
		t.Fatalf("after reopen the topic holds %d messages, want 2", n)
	}
}

// TestAutoCreateTopics checks that produce creates an unknown topic when configured.
func TestAutoCreateTopics(t *testing.T) {
	ts := startServer(t, Options{AutoCreateTopics: true, DefaultPartitions: 3})
	res := ts.produce("fresh.topic", `{"messages":[{"value":1,"partition":2}]}`)
	if len(res.Offsets) != 1 || res.Offsets[0].Partition != 2 {
		t.Fatalf("produce: %+v", res)
	}
	var info api.Topic
	decodeJSON(t, ts.must(http.StatusOK, "GET", "/v1/topics/fresh.topic", "").body, &info)
	if len(info.Partitions) != 3 {
		t.Fatalf("auto-created topic: %+v", info)
	}
}

// TestTopics checks create (201, 200 same, 409 different), list and describe.
func TestTopics(t *testing.T) {
	ts := startServer(t, Options{})
	var tp api.Topic
	decodeJSON(t, ts.must(http.StatusCreated, "PUT", "/v1/topics/b.orders", `{"partitions":2,"retention_ms":3600000}`).body, &tp)
	if tp.Name != "b.orders" || len(tp.Partitions) != 2 || tp.RetentionMS != 3600000 {
		t.Fatalf("created: %+v", tp)
	}
	ts.must(http.StatusOK, "PUT", "/v1/topics/b.orders", `{"partitions":2,"retention_ms":3600000}`)
	ts.must(http.StatusConflict, "PUT", "/v1/topics/b.orders", `{"partitions":4}`)
	ts.must(http.StatusCreated, "PUT", "/v1/topics/a.payments", `{"partitions":1}`)
	ts.produce("b.orders", `{"messages":[{"value":"x","partition":1}]}`)

	var list api.TopicList
	decodeJSON(t, ts.must(http.StatusOK, "GET", "/v1/topics", "").body, &list)
	if fmt.Sprint(list.Topics) != "[{a.payments 1} {b.orders 2}]" {
		t.Fatalf("list: %+v", list)
	}
	decodeJSON(t, ts.must(http.StatusOK, "GET", "/v1/topics/b.orders", "").body, &tp)
	p1 := tp.Partitions[1]
	if p1.Partition != 1 || p1.StartOffset != 0 || p1.EndOffset != 1 || p1.Bytes <= 0 {
		t.Fatalf("describe: %+v", tp)
	}
}

// TestConcurrentProduce produces from many goroutines (run with -race) and checks that every
// acknowledged offset is unique and dense.
func TestConcurrentProduce(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("load", 2)
	const workers, each = 16, 25
	var mu sync.Mutex
	seen := map[api.Position]bool{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				body := fmt.Sprintf(`{"messages":[{"key":"w%d","value":{"w":%d,"i":%d}},{"value_base64":"AA==","partition":%d}]}`, w, w, i, i%2)
				req, _ := http.NewRequest("POST", ts.hs.URL+"/v1/topics/load/messages", bytes.NewReader([]byte(body)))
				resp, err := ts.hs.Client().Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				var out api.ProduceResponse
				err = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || len(out.Offsets) != 2 {
					t.Errorf("produce: %d %v %+v", resp.StatusCode, err, out)
					return
				}
				mu.Lock()
				for _, p := range out.Offsets {
					if seen[api.Position(p)] {
						t.Errorf("offset %+v acknowledged twice", p)
					}
					seen[api.Position(p)] = true
				}
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	if len(seen) != workers*each*2 {
		t.Fatalf("%d distinct positions, want %d", len(seen), workers*each*2)
	}
	total := 0
	for p := 0; p < 2; p++ {
		var end int64
		for off := int64(0); ; {
			got := ts.fetch("load", p, fmt.Sprintf("offset=%d&max_messages=1000", off))
			for _, m := range got.Messages {
				if !seen[api.Position{Partition: p, Offset: m.Offset}] {
					t.Fatalf("stored offset %d/%d was never acknowledged", p, m.Offset)
				}
			}
			total += len(got.Messages)
			off, end = got.NextOffset, got.EndOffset
			if off >= end {
				break
			}
		}
	}
	if total != len(seen) {
		t.Fatalf("stored %d messages, acknowledged %d", total, len(seen))
	}
}
