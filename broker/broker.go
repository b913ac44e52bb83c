package broker

import (
	"context"
)

// Broker is an open data directory: topics, their partitions and the shared commit log.
// All methods are safe for concurrent use.
type Broker struct {
	opts Options
}

// Open opens (creating if needed) the data directory in opts.Dir, recovers it after a crash
// (truncating a torn tail, replaying the log since the last checkpoint) and starts the flusher.
func Open(opts Options) (*Broker, error) { panic("todo") }

// Close stops accepting produces, flushes and syncs what is pending, writes a checkpoint and
// closes every file. It is safe to call more than once.
func (b *Broker) Close() error { panic("todo") }

// CreateTopic creates a topic. It reports created=false with a nil error when the topic exists
// with the same partition count, and ErrTopicExists when it exists with another.
// ErrInvalidName and ErrInvalidArgument (partitions outside 1..10000) are returned for bad input.
func (b *Broker) CreateTopic(name string, cfg TopicConfig) (created bool, err error) { panic("todo") }

// Topics lists every topic, sorted by name, with its partitions.
func (b *Broker) Topics() []TopicInfo { panic("todo") }

// Topic describes one topic; ErrUnknownTopic if there is none.
func (b *Broker) Topic(name string) (TopicInfo, error) { panic("todo") }

// Produce appends msgs to topic as one unit: all are appended or none, also across a crash.
// It returns after the messages are durable under the fsync policy. With a non-empty
// idempotencyKey a repeat within the idempotency window returns the first result with
// Duplicate set and appends nothing; a repeat with different messages gets ErrIdempotencyReused.
// Once the request is queued it is not abandoned when ctx ends (it may already be on disk).
// Errors: ErrUnknownTopic, ErrUnknownPartition, ErrMessageTooLarge, ErrInvalidArgument,
// ErrBackpressure, ErrIdempotencyReused, ErrClosed.
func (b *Broker) Produce(ctx context.Context, topic string, msgs []Message, idempotencyKey string) (ProduceResult, error) {
	panic("todo")
}

// Fetch reads messages of one partition starting at opts.Offset. Only durable messages are
// visible. With opts.Wait it waits (up to Wait, or until ctx ends) for a message at Offset when
// Offset is the end. Errors: ErrUnknownTopic, ErrUnknownPartition, *OffsetRangeError, ErrCorrupt.
func (b *Broker) Fetch(ctx context.Context, topic string, partition int, opts FetchOptions) (*FetchResult, error) {
	panic("todo")
}

// Stats returns broker-wide counters.
func (b *Broker) Stats() Stats { panic("todo") }
