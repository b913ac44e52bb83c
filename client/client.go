// This file holds the Client, its options, and the topic, produce, fetch and stats calls.

package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/api"
)

// Types of the HTTP contract, shared with the gateway.
type (
	// Message is a message to produce. Set exactly one of Value (JSON) and ValueBase64.
	Message = api.ProduceMessage
	// FetchedMessage is a message read from a partition.
	FetchedMessage = api.Message
	// Position is where a message was stored.
	Position = api.Position
	// ProduceResult answers Produce.
	ProduceResult = api.ProduceResponse
	// FetchResult answers Fetch.
	FetchResult = api.FetchResponse
	// TopicConfig is the configuration of a new topic.
	TopicConfig = api.TopicRequest
	// Topic describes a topic and its partitions.
	Topic = api.Topic
	// TopicSummary is an entry of ListTopics.
	TopicSummary = api.TopicSummary
	// Stats are the server's counters (GET /v1/stats).
	Stats = api.Stats
	// ClusterStatus is a cluster member's view of its cluster (GET /v1/cluster).
	ClusterStatus = api.ClusterStatus
)

// Client talks to one Imago server. It is safe for concurrent use. The zero configuration
// (New with a URL only) retries what is safe to retry, 5 attempts in all.
type Client struct {
	base  string
	token string
	hc    *http.Client
	tls   *tls.Config // WithTLSConfig: the default transport's, when hc is not given
	retry httpRetry

	// idPrefix and idSeq make idempotency keys: unique per client, ordered within it.
	idPrefix string
	idSeq    atomic.Uint64
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends "Authorization: Bearer <token>" on every request. An empty token sends none.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient uses hc for requests (transport, TLS, proxies). The default is a client with
// its own transport and no overall timeout: bound calls with their context.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithTLSConfig makes the default transport use cfg for an https:// server: the CAs to trust
// (RootCAs; nil: the system's) and, for a server that requires mutual TLS, the client's
// certificate. Ignored with WithHTTPClient, whose transport carries its own.
func WithTLSConfig(cfg *tls.Config) Option { return func(c *Client) { c.tls = cfg } }

// WithRetries sets how many times in all a retryable request is sent (see the package doc for
// what is retryable); 1 disables retries. The default is 5.
func WithRetries(attempts int) Option {
	return func(c *Client) {
		if attempts < 1 {
			attempts = 1
		}
		c.retry.attempts = attempts
	}
}

// WithBackoff sets the backoff between attempts: the n-th retry waits a random time up to
// min·2ⁿ⁻¹, capped at max (or the server's Retry-After when it asks for longer). The defaults
// are 50 ms and 2 s.
func WithBackoff(min, max time.Duration) Option {
	return func(c *Client) {
		if min > 0 {
			c.retry.min = min
		}
		if max >= c.retry.min {
			c.retry.max = max
		}
	}
}

// New returns a client for the server at baseURL ("http://127.0.0.1:8080").
func New(baseURL string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/"), retry: defaultRetry}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		if c.tls != nil {
			t.TLSClientConfig = c.tls.Clone()
		}
		c.hc = &http.Client{Transport: t}
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	c.idPrefix = "imago-go-" + hex.EncodeToString(id[:]) + "-"
	return c
}

// BaseURL returns the server address the client was made with.
func (c *Client) BaseURL() string { return c.base }

// NewIdempotencyKey returns a key no other client makes: a random client id and a sequence
// number. Produce uses one when ProduceOptions.Idempotent is set; keep the key to retry the same
// request yourself later (after a crash, say).
func (c *Client) NewIdempotencyKey() string {
	return c.idPrefix + strconv.FormatUint(c.idSeq.Add(1), 10)
}

// JSON returns a message whose value is the JSON text v (not checked here; the server rejects
// invalid JSON with 400).
func JSON(v string) Message { return Message{Value: json.RawMessage(v)} }

// Text returns a message whose value is the JSON string s.
func Text(s string) Message {
	b, _ := json.Marshal(s)
	return Message{Value: b}
}

// Ptr returns a pointer to v, for the optional fields of Message (Key, Partition).
func Ptr[T any](v T) *T { return &v }

// ProduceOptions tune Produce.
type ProduceOptions struct {
	// IdempotencyKey, when set, makes a retry of this request safe: the server answers a repeat
	// within its dedupe window (24 h by default, kept across restarts) with the first result and
	// Duplicate set, and stores nothing. The client then retries the request by itself on
	// network errors, 429 and 503.
	IdempotencyKey string
	// Idempotent makes up an IdempotencyKey (NewIdempotencyKey) when none is given, so that the
	// request is retried safely.
	Idempotent bool
}

// FetchOptions bound a Fetch.
type FetchOptions struct {
	// Offset is the first offset to read.
	Offset int64
	// MaxMessages caps the messages returned; 0 means the server default (100).
	MaxMessages int
	// MaxBytes caps the bytes returned; 0 means the server default (1 MiB). One message is
	// returned even if it is larger.
	MaxBytes int
	// Wait long-polls: when Offset is the end of the partition, wait up to this long for a
	// message. It is sent in milliseconds.
	Wait time.Duration
}

// CreateTopic creates a topic. It reports created=false with a nil error when the topic exists
// with the same configuration; a topic with another configuration is a 409 *Error.
func (c *Client) CreateTopic(ctx context.Context, name string, cfg TopicConfig) (created bool, err error) {
	status, err := c.send(ctx, request{method: http.MethodPut, path: "/v1/topics/" + url.PathEscape(name), in: cfg, retry: true})
	if err != nil {
		return false, err
	}
	return status == http.StatusCreated, nil
}

// ListTopics lists the topics, sorted by name.
func (c *Client) ListTopics(ctx context.Context) ([]TopicSummary, error) {
	var out api.TopicList
	if _, err := c.get(ctx, "/v1/topics", &out); err != nil {
		return nil, err
	}
	return out.Topics, nil
}

// DescribeTopic describes a topic with the start and end offset of each partition.
func (c *Client) DescribeTopic(ctx context.Context, name string) (*Topic, error) {
	var out Topic
	if _, err := c.get(ctx, "/v1/topics/"+url.PathEscape(name), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Produce appends msgs to topic as one unit and returns their positions in request order once
// they are durable. With an idempotency key (opts) the request is retried on network errors,
// 429 and 503; without one a network error leaves the outcome unknown and is returned as is
// (see the package doc). When an attempt may have been stored (its answer was lost) and the
// retries end without telling, the error wraps ErrOutcomeUnknown, not the last refusal: send
// the request again only with the same IdempotencyKey.
func (c *Client) Produce(ctx context.Context, topic string, msgs []Message, opts ProduceOptions) (*ProduceResult, error) {
	key := opts.IdempotencyKey
	if key == "" && opts.Idempotent {
		key = c.NewIdempotencyKey()
	}
	r := request{method: http.MethodPost, path: "/v1/topics/" + url.PathEscape(topic) + "/messages",
		in: api.ProduceRequest{Messages: msgs}}
	if key != "" {
		r.hdr = http.Header{"Idempotency-Key": {key}}
		r.retry = true
	}
	var out ProduceResult
	r.out = &out
	if _, err := c.send(ctx, r); err != nil {
		return nil, err
	}
	return &out, nil
}

// Fetch reads messages of one partition from opts.Offset. An offset outside the partition is a
// 416 *Error whose StartOffset and EndOffset say what is stored.
func (c *Client) Fetch(ctx context.Context, topic string, partition int, opts FetchOptions) (*FetchResult, error) {
	q := url.Values{"offset": {strconv.FormatInt(opts.Offset, 10)}}
	setReadLimits(q, opts.MaxMessages, opts.MaxBytes, opts.Wait)
	p := "/v1/topics/" + url.PathEscape(topic) + "/partitions/" + strconv.Itoa(partition) + "/messages?" + q.Encode()
	var out FetchResult
	if _, err := c.get(ctx, p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// setReadLimits adds the bounds of a fetch or a poll to q; a zero bound is left to the server.
func setReadLimits(q url.Values, maxMessages, maxBytes int, wait time.Duration) {
	if maxMessages > 0 {
		q.Set("max_messages", strconv.Itoa(maxMessages))
	}
	if maxBytes > 0 {
		q.Set("max_bytes", strconv.Itoa(maxBytes))
	}
	if wait > 0 {
		q.Set("wait_ms", strconv.FormatInt(wait.Milliseconds(), 10))
	}
}

// Stats returns the server's counters (GET /v1/stats): the text protocol's stats as JSON.
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	var out Stats
	if _, err := c.get(ctx, "/v1/stats", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ClusterStatus returns the answering server's view of its cluster (GET /v1/cluster). A
// server that is not a cluster member answers 404 not_found.
func (c *Client) ClusterStatus(ctx context.Context) (*ClusterStatus, error) {
	var out ClusterStatus
	if _, err := c.get(ctx, "/v1/cluster", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Health returns nil when GET /healthz answers 200 (the process is up).
func (c *Client) Health(ctx context.Context) error {
	_, err := c.send(ctx, request{method: http.MethodGet, path: "/healthz"})
	return err
}

// Ready returns nil when GET /readyz answers 200 (storage open, resources reachable).
func (c *Client) Ready(ctx context.Context) error {
	_, err := c.send(ctx, request{method: http.MethodGet, path: "/readyz"})
	return err
}
