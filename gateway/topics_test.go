package gateway

import (
	"net/http"
	"testing"
)

// TestCreateTopicRetentionConflict: PUT /v1/topics/{topic} on an existing topic answers 200
// only when the request states the topic's configuration, retention included (absent or 0 is
// the broker default, as on create); any other partition count or retention is 409
// topic_exists.
func TestCreateTopicRetentionConflict(t *testing.T) {
	ts := startServer(t, Options{})
	ts.must(http.StatusCreated, "PUT", "/v1/topics/kept", `{"partitions":2,"retention_ms":3600000,"retention_bytes":1048576}`)
	ts.must(http.StatusCreated, "PUT", "/v1/topics/plain", `{"partitions":2}`)
	cases := []struct {
		topic, body string
		status      int
	}{
		{"kept", `{"partitions":2,"retention_ms":3600000,"retention_bytes":1048576}`, 200},
		{"kept", `{"retention_bytes":1048576,"retention_ms":3600000,"partitions":2}`, 200},
		{"kept", `{"partitions":2,"retention_ms":7200000,"retention_bytes":1048576}`, 409},
		{"kept", `{"partitions":2,"retention_ms":3600000,"retention_bytes":1}`, 409},
		{"kept", `{"partitions":2,"retention_ms":3600000}`, 409},
		{"kept", `{"partitions":2}`, 409},
		{"kept", `{"partitions":3,"retention_ms":3600000,"retention_bytes":1048576}`, 409},
		{"plain", `{"partitions":2}`, 200},
		{"plain", `{"partitions":2,"retention_ms":0,"retention_bytes":0}`, 200},
		{"plain", `{"partitions":2,"retention_ms":null}`, 200},
		{"plain", `{"partitions":2,"retention_ms":60000}`, 409},
		{"plain", `{"partitions":2,"retention_bytes":1048576}`, 409},
	}
	for _, c := range cases {
		r := ts.do("PUT", "/v1/topics/"+c.topic, c.body)
		if c.status == http.StatusOK {
			if r.status != http.StatusOK {
				t.Errorf("PUT %s %s: status %d, want 200; body %s", c.topic, c.body, r.status, r.body)
			}
			continue
		}
		if r.status != http.StatusConflict || errorBody(t, r).Error.Code != "topic_exists" {
			t.Errorf("PUT %s %s: status %d, want 409 topic_exists; body %s", c.topic, c.body, r.status, r.body)
		}
	}
}
