package outbox

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"sort"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/client"
)

// Publisher is where the relay sends messages: the in-process broker (BrokerPublisher) inside
// `imago serve`, or a broker over HTTP (ClientPublisher) for `imago outbox relay`.
type Publisher interface {
	// Publish appends msgs to topic as one unit, in order, with the idempotency key: a repeat
	// of the same key with the same messages must append nothing and succeed.
	Publish(ctx context.Context, topic string, msgs []Message, idempotencyKey string) error
}

// ErrPermanent marks an error that retrying cannot fix (the idempotency key was used with
// other messages, a row appeared inside a published batch): the relay stops the source and
// reports it.
var ErrPermanent = errors.New("outbox: permanent error")

// ErrStrayRows: completing a batch found a row inside the batch's range (cur, end] that the
// batch did not publish (it committed after the relay judged its id gap final). The relay
// stops rather than remove or pass it unpublished; the row stays in the outbox.
var ErrStrayRows = errors.New("outbox: unpublished rows inside a published batch's range")

// ErrKeyReused: the broker holds one of the relay's idempotency keys with other messages: the
// outbox's history diverged from what was published (a failover or a restore moved the
// cursor back and rows were rebuilt under used ids). The relay stops and logs the command
// that moves the source to a new epoch (docs/outbox.md).
var ErrKeyReused = errors.New("outbox: idempotency key already used with other messages")

// ErrSourceMoved: the state row's cursor belongs to another PostgreSQL cluster (a restored
// dump, a logical replication cutover): new rows would sort below it and never be relayed.
// The relay refuses to run and logs the command that resets the cursor (docs/outbox.md).
var ErrSourceMoved = errors.New("outbox: the cursor belongs to another database cluster")

// ErrTooLarge: the publisher refused a request for its size: one message over the broker's
// limit (broker.ErrMessageTooLarge, HTTP 413 message_too_large), or a request body over the
// gateway's (413 payload_too_large). It comes with ErrPermanent: the same rows are refused
// again. The relay stops and names the row (docs/outbox.md, "too large to publish").
var ErrTooLarge = errors.New("outbox: too large for the broker")

// ErrRowsChanged: removing (or marking) a published batch touched another number of rows than
// the batch has (rows removed or marked by someone else).
var ErrRowsChanged = errors.New("outbox: the published batch's rows changed under the relay")

// BrokerPublisher publishes to an in-process broker.
type BrokerPublisher struct{ B *broker.Broker }

// Publish implements Publisher.
func (p BrokerPublisher) Publish(ctx context.Context, topic string, msgs []Message, key string) error {
	out := make([]broker.Message, len(msgs))
	for i, m := range msgs {
		bm := broker.Message{Value: m.Payload, Partition: -1, Headers: sortedHeaders(m.Headers)}
		if m.Key != "" {
			bm.Key = []byte(m.Key)
		}
		out[i] = bm
	}
	_, err := p.B.Produce(ctx, topic, out, key)
	if errors.Is(err, broker.ErrIdempotencyReused) {
		return errors.Join(ErrPermanent, ErrKeyReused, err)
	}
	if errors.Is(err, broker.ErrMessageTooLarge) {
		return errors.Join(ErrPermanent, ErrTooLarge, err)
	}
	if errors.Is(err, broker.ErrInvalidArgument) {
		return errors.Join(ErrPermanent, err)
	}
	return err
}

// ClientPublisher publishes to a broker over its HTTP API.
type ClientPublisher struct{ C *client.Client }

// Publish implements Publisher.
func (p ClientPublisher) Publish(ctx context.Context, topic string, msgs []Message, key string) error {
	out := make([]client.Message, len(msgs))
	for i, m := range msgs {
		out[i] = clientMessage(m)
	}
	_, err := p.C.Produce(ctx, topic, out, client.ProduceOptions{IdempotencyKey: key})
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusConflict {
		return errors.Join(ErrPermanent, ErrKeyReused, err)
	}
	if errors.As(err, &ce) && ce.Status == http.StatusRequestEntityTooLarge {
		return errors.Join(ErrPermanent, ErrTooLarge, err)
	}
	if errors.As(err, &ce) && ce.Status == http.StatusBadRequest {
		return errors.Join(ErrPermanent, err)
	}
	return err
}

// clientMessage is m as ClientPublisher sends it: the payload in base64 (encodedSize counts
// what this takes in the request).
func clientMessage(m Message) client.Message {
	v := base64.StdEncoding.EncodeToString(m.Payload)
	cm := client.Message{ValueBase64: &v}
	if m.Key != "" {
		k := m.Key
		cm.Key = &k
	}
	if len(m.Headers) > 0 {
		cm.Headers = m.Headers
	}
	return cm
}

// sortedHeaders orders headers by name, so that a republished batch is byte-identical.
func sortedHeaders(h map[string]string) []broker.Header {
	if len(h) == 0 {
		return nil
	}
	out := make([]broker.Header, 0, len(h))
	for k, v := range h {
		out = append(out, broker.Header{Key: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}
