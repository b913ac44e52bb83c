// Package client is the Go client of Imago's HTTP API (shared/API.md).
//
// # The model
//
// An Imago topic is split into partitions; each partition is an append-only log whose messages
// have dense offsets 0, 1, 2, … A producer posts a batch of messages to a topic; the server
// answers 200 only once the whole batch is durable (fsync'd under the default policy), and the
// batch is one unit: all of its messages are stored, or none. The answer lists the (partition,
// offset) of every message in request order.
//
// A network error or a timeout leaves the outcome unknown: the batch may or may not be stored.
// Retrying is safe only with an idempotency key (ProduceOptions.IdempotencyKey): a repeat of a
// key the server has seen returns the first answer with Duplicate set and stores nothing. This
// client does not retry by itself.
//
// Consumers pull: Fetch reads one partition from an offset and returns the messages and the
// offset to ask for next. With FetchOptions.Wait the call long-polls until a message arrives or
// the wait ends. Only durable messages are ever returned.
//
// # Use
//
//	c := client.New("http://127.0.0.1:8080", client.WithToken(os.Getenv("IMAGO_TOKEN")))
//	_, err := c.CreateTopic(ctx, "settlement.transfers", client.TopicConfig{Partitions: 4})
//	res, err := c.Produce(ctx, "settlement.transfers",
//		[]client.Message{{Key: client.Ptr("A"), Value: json.RawMessage(`{"from":"A","to":"B","amount":100}`)}},
//		client.ProduceOptions{IdempotencyKey: "transfer-8812"})
//	page, err := c.Fetch(ctx, "settlement.transfers", 0, client.FetchOptions{Offset: 0, Wait: 10 * time.Second})
//
// Errors from the server are *Error values carrying the HTTP status and the stable error code
// of the API; branch on Code (errors.As), not on the message.
//
// The request and response types are those of package api, which the gateway serves.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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
)

// Client talks to one Imago server. It is safe for concurrent use.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithToken sends "Authorization: Bearer <token>" on every request. An empty token sends none.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithHTTPClient uses hc for requests (transport, TLS, proxies). The default is a client with
// its own transport and no overall timeout: bound calls with their context.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client for the server at baseURL ("http://127.0.0.1:8080").
func New(baseURL string, opts ...Option) *Client {
	c := &Client{base: strings.TrimRight(baseURL, "/")}
	for _, o := range opts {
		o(c)
	}
	if c.hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		c.hc = &http.Client{Transport: t}
	}
	return c
}

// BaseURL returns the server address the client was made with.
func (c *Client) BaseURL() string { return c.base }

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
	// Duplicate set, and stores nothing.
	IdempotencyKey string
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
	status, err := c.do(ctx, http.MethodPut, "/v1/topics/"+url.PathEscape(name), nil, cfg, nil)
	if err != nil {
		return false, err
	}
	return status == http.StatusCreated, nil
}

// ListTopics lists the topics, sorted by name.
func (c *Client) ListTopics(ctx context.Context) ([]TopicSummary, error) {
	var out api.TopicList
	if _, err := c.do(ctx, http.MethodGet, "/v1/topics", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Topics, nil
}

// DescribeTopic describes a topic with the start and end offset of each partition.
func (c *Client) DescribeTopic(ctx context.Context, name string) (*Topic, error) {
	var out Topic
	if _, err := c.do(ctx, http.MethodGet, "/v1/topics/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Produce appends msgs to topic as one unit and returns their positions in request order once
// they are durable. On a network error the outcome is unknown (see the package doc).
func (c *Client) Produce(ctx context.Context, topic string, msgs []Message, opts ProduceOptions) (*ProduceResult, error) {
	var hdr http.Header
	if opts.IdempotencyKey != "" {
		hdr = http.Header{"Idempotency-Key": {opts.IdempotencyKey}}
	}
	var out ProduceResult
	req := api.ProduceRequest{Messages: msgs}
	if _, err := c.do(ctx, http.MethodPost, "/v1/topics/"+url.PathEscape(topic)+"/messages", hdr, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Fetch reads messages of one partition from opts.Offset. An offset outside the partition is a
// 416 *Error whose StartOffset and EndOffset say what is stored.
func (c *Client) Fetch(ctx context.Context, topic string, partition int, opts FetchOptions) (*FetchResult, error) {
	q := url.Values{"offset": {strconv.FormatInt(opts.Offset, 10)}}
	if opts.MaxMessages > 0 {
		q.Set("max_messages", strconv.Itoa(opts.MaxMessages))
	}
	if opts.MaxBytes > 0 {
		q.Set("max_bytes", strconv.Itoa(opts.MaxBytes))
	}
	if opts.Wait > 0 {
		q.Set("wait_ms", strconv.FormatInt(opts.Wait.Milliseconds(), 10))
	}
	p := "/v1/topics/" + url.PathEscape(topic) + "/partitions/" + strconv.Itoa(partition) + "/messages?" + q.Encode()
	var out FetchResult
	if _, err := c.do(ctx, http.MethodGet, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Health returns nil when GET /healthz answers 200 (the process is up).
func (c *Client) Health(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil)
	return err
}

// Ready returns nil when GET /readyz answers 200 (storage open, resources reachable).
func (c *Client) Ready(ctx context.Context) error {
	_, err := c.do(ctx, http.MethodGet, "/readyz", nil, nil, nil)
	return err
}

// do sends one request with a JSON body (when in is not nil) and decodes a 2xx JSON answer
// into out (when not nil). A non-2xx answer is returned as *Error.
func (c *Client) do(ctx context.Context, method, path string, hdr http.Header, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return 0, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, parseError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: decode %d response: %w", method, path, resp.StatusCode, err)
	}
	return resp.StatusCode, nil
}
