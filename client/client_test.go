package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// fakeServer answers like the gateway for the few routes the tests use and records requests.
func fakeServer(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return New(srv.URL+"/", WithToken("tok"), WithRetries(1)) // shapes, not retries
}

func TestProduceSendsBodyKeyAndToken(t *testing.T) {
	c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/topics/pay.ments/messages" {
			t.Errorf("got %s %s", r.Method, r.URL.Path)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer tok" {
			t.Errorf("authorization %q", got)
		}
		if got := r.Header.Get("Idempotency-Key"); got != "k1" {
			t.Errorf("idempotency key %q", got)
		}
		body, _ := io.ReadAll(r.Body)
		want := `{"messages":[{"key":"A","value":{"n":1},"headers":{"h":"v"},"partition":2},{"value":"x"}]}`
		if string(body) != want {
			t.Errorf("body\n got %s\nwant %s", body, want)
		}
		w.Write([]byte(`{"offsets":[{"partition":2,"offset":7},{"partition":0,"offset":3}],"duplicate":true}`))
	})
	res, err := c.Produce(context.Background(), "pay.ments", []Message{
		{Key: Ptr("A"), Value: json.RawMessage(`{"n":1}`), Headers: map[string]string{"h": "v"}, Partition: Ptr(2)},
		Text("x"),
	}, ProduceOptions{IdempotencyKey: "k1"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Duplicate || len(res.Offsets) != 2 || res.Offsets[0] != (Position{Partition: 2, Offset: 7}) {
		t.Fatalf("result %+v", res)
	}
}

func TestFetchQuery(t *testing.T) {
	c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/topics/t/partitions/3/messages" {
			t.Errorf("path %s", r.URL.Path)
		}
		q := r.URL.Query()
		if q.Get("offset") != "10" || q.Get("max_messages") != "5" || q.Get("max_bytes") != "4096" || q.Get("wait_ms") != "1500" {
			t.Errorf("query %s", r.URL.RawQuery)
		}
		w.Write([]byte(`{"messages":[{"topic":"t","partition":3,"offset":10,"key":null,"value":"v","headers":{},"timestamp":"2026-11-25T03:00:00.000Z"}],"next_offset":11,"start_offset":0,"end_offset":11}`))
	})
	res, err := c.Fetch(context.Background(), "t", 3, FetchOptions{Offset: 10, MaxMessages: 5, MaxBytes: 4096, Wait: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Messages) != 1 || res.NextOffset != 11 || string(res.Messages[0].Value) != `"v"` || res.Messages[0].Key != nil {
		t.Fatalf("result %+v", res)
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		header   map[string]string
		wantCode string
		check    func(t *testing.T, e *Error)
	}{
		{name: "api error", status: 404, body: `{"error":{"code":"unknown_topic","message":"topic t does not exist"}}`, wantCode: "unknown_topic"},
		{name: "offset range", status: 416, body: `{"error":{"code":"offset_out_of_range","message":"m"},"start_offset":0,"end_offset":5}`,
			wantCode: "offset_out_of_range", check: func(t *testing.T, e *Error) {
				if e.StartOffset == nil || *e.StartOffset != 0 || e.EndOffset == nil || *e.EndOffset != 5 {
					t.Errorf("offsets %v %v", e.StartOffset, e.EndOffset)
				}
			}},
		{name: "retry after", status: 429, body: `{"error":{"code":"backpressure","message":"busy"}}`, header: map[string]string{"Retry-After": "2"},
			wantCode: "backpressure", check: func(t *testing.T, e *Error) {
				if e.RetryAfter != 2*time.Second {
					t.Errorf("retry after %v", e.RetryAfter)
				}
			}},
		{name: "not json", status: 502, body: "bad gateway\n", wantCode: "http_502", check: func(t *testing.T, e *Error) {
			if e.Message != "bad gateway" {
				t.Errorf("message %q", e.Message)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			})
			_, err := c.DescribeTopic(context.Background(), "t")
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err %v is not *Error", err)
			}
			if e.Status != tt.status || e.Code != tt.wantCode || !IsCode(err, tt.wantCode) || !IsStatus(err, tt.status) {
				t.Fatalf("got %+v", e)
			}
			if tt.check != nil {
				tt.check(t, e)
			}
		})
	}
}

func TestCreateTopicCreatedFlag(t *testing.T) {
	status := http.StatusCreated
	c := fakeServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut {
			t.Errorf("method %s", r.Method)
		}
		var req TopicConfig
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Partitions != 4 {
			t.Errorf("request %+v %v", req, err)
		}
		w.WriteHeader(status)
		w.Write([]byte(`{"name":"t","partitions":[]}`))
	})
	for _, want := range []bool{true, false} {
		created, err := c.CreateTopic(context.Background(), "t", TopicConfig{Partitions: 4})
		if err != nil || created != want {
			t.Fatalf("created=%v err=%v, want %v", created, err, want)
		}
		status = http.StatusOK
	}
}
