// Package api holds Imago's HTTP contract: the OpenAPI 3.0 description of every route the
// gateway serves (openapi.yaml, embedded as Spec and served at /openapi.yaml) and the JSON
// request and response types shared by the gateway and the Go client. It imports nothing of
// Imago's own, so any program can depend on it.
//
// The gateway writes its hot responses (produce acknowledgements, fetched messages) by hand
// for speed; the types here describe the same JSON and are what the client decodes into.
package api

import (
	_ "embed" // for Spec
	"encoding/json"
)

// Spec is the OpenAPI 3.0 document (YAML) describing the HTTP API.
//
//go:embed openapi.yaml
var Spec []byte

// ErrorResponse is the body of every error: {"error": {"code", "message"}}.
// A 416 (offset_out_of_range) also carries StartOffset and EndOffset at the top level.
type ErrorResponse struct {
	Error       Error  `json:"error"`
	StartOffset *int64 `json:"start_offset,omitempty"`
	EndOffset   *int64 `json:"end_offset,omitempty"`
}

// Error describes what went wrong. Code is stable snake_case that programs branch on;
// Message is a sentence for a person; Field, when set, names the request field or
// parameter at fault (e.g. "messages[2].partition", "offset").
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Field   string `json:"field,omitempty"`
}

// ProduceMessage is one message in a produce request. Exactly one of Value (any JSON,
// stored as its compact text and returned verbatim) and ValueBase64 (bytes, standard
// base64 with padding) is set. Key nil means no key; Partition nil lets the broker choose
// (FNV-1a of the key modulo the partition count, or round-robin for unkeyed messages).
type ProduceMessage struct {
	Key         *string           `json:"key,omitempty"`
	Value       json.RawMessage   `json:"value,omitempty"`
	ValueBase64 *string           `json:"value_base64,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Partition   *int              `json:"partition,omitempty"`
}

// ProduceRequest is the body of POST /v1/topics/{topic}/messages.
type ProduceRequest struct {
	Messages []ProduceMessage `json:"messages"`
}

// Position is where a message was stored.
type Position struct {
	Partition int   `json:"partition"`
	Offset    int64 `json:"offset"`
}

// ProduceResponse answers a produce: one position per message, in request order.
// Duplicate is true when the Idempotency-Key had been seen and nothing was appended.
type ProduceResponse struct {
	Offsets   []Position `json:"offsets"`
	Duplicate bool       `json:"duplicate,omitempty"`
}

// Message is a fetched message. Exactly one of Value and ValueBase64 is set. Key is nil
// when the message has no key. Timestamp is RFC 3339 with milliseconds, UTC, set by the
// broker at append.
type Message struct {
	Topic       string            `json:"topic"`
	Partition   int               `json:"partition"`
	Offset      int64             `json:"offset"`
	Key         *string           `json:"key"`
	Value       json.RawMessage   `json:"value,omitempty"`
	ValueBase64 *string           `json:"value_base64,omitempty"`
	Headers     map[string]string `json:"headers"`
	Timestamp   string            `json:"timestamp"`
}

// FetchResponse answers GET /v1/topics/{topic}/partitions/{p}/messages. NextOffset is the
// offset to ask for next; EndOffset is one past the last durable message; StartOffset is
// the oldest offset still stored.
type FetchResponse struct {
	Messages    []Message `json:"messages"`
	NextOffset  int64     `json:"next_offset"`
	StartOffset int64     `json:"start_offset"`
	EndOffset   int64     `json:"end_offset"`
}

// TopicRequest is the body of PUT /v1/topics/{topic}. RetentionMS and RetentionBytes of 0
// (or absent) mean the broker defaults.
type TopicRequest struct {
	Partitions     int   `json:"partitions"`
	RetentionMS    int64 `json:"retention_ms,omitempty"`
	RetentionBytes int64 `json:"retention_bytes,omitempty"`
}

// TopicSummary is one entry of GET /v1/topics.
type TopicSummary struct {
	Name       string `json:"name"`
	Partitions int    `json:"partitions"`
}

// TopicList answers GET /v1/topics.
type TopicList struct {
	Topics []TopicSummary `json:"topics"`
}

// PartitionInfo describes one partition of a topic.
type PartitionInfo struct {
	Partition   int   `json:"partition"`
	StartOffset int64 `json:"start_offset"`
	EndOffset   int64 `json:"end_offset"`
	Bytes       int64 `json:"bytes"`
}

// Topic answers GET and PUT /v1/topics/{topic}.
type Topic struct {
	Name           string          `json:"name"`
	Partitions     []PartitionInfo `json:"partitions"`
	RetentionMS    int64           `json:"retention_ms"`
	RetentionBytes int64           `json:"retention_bytes"`
}

// Stats answers GET /v1/stats: broker-wide counters.
type Stats struct {
	Version         string  `json:"version"`
	UptimeSeconds   float64 `json:"uptime_seconds"`
	Topics          int     `json:"topics"`
	Partitions      int     `json:"partitions"`
	MessagesIn      int64   `json:"messages_in"`
	BytesIn         int64   `json:"bytes_in"`
	MessagesOut     int64   `json:"messages_out"`
	BytesOut        int64   `json:"bytes_out"`
	Fsyncs          int64   `json:"fsyncs"`
	LogBytes        int64   `json:"log_bytes"`
	PendingBytes    int64   `json:"pending_bytes"`
	RecoveredBytes  int64   `json:"recovered_bytes"`
	TruncatedBytes  int64   `json:"truncated_bytes"`
	OpenDurationMS  float64 `json:"open_duration_ms"`
	IdempotencyKeys int     `json:"idempotency_keys"`
}

// Status answers /healthz and /readyz.
type Status struct {
	Status string `json:"status"`
}
