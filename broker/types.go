package broker

import (
	"errors"
	"fmt"
	"hash/fnv"
	"time"
)

// Sentinel errors that callers branch on. The gateway maps each to one HTTP status.
var (
	ErrUnknownTopic      = errors.New("unknown topic")
	ErrUnknownPartition  = errors.New("unknown partition")
	ErrTopicExists       = errors.New("topic exists with a different configuration")
	ErrInvalidName       = errors.New("invalid name")
	ErrInvalidArgument   = errors.New("invalid argument")
	ErrOffsetOutOfRange  = errors.New("offset out of range")
	ErrMessageTooLarge   = errors.New("message too large")
	ErrBackpressure      = errors.New("broker is busy: too many bytes waiting for the disk")
	ErrIdempotencyReused = errors.New("idempotency key reused with a different request")
	ErrClosed            = errors.New("broker is closed")
	ErrCorrupt           = errors.New("stored record is corrupt")
	// ErrStorage (with ErrClosed) refuses writes after a write, fsync or checkpoint failed (a
	// full disk, an I/O error), until a restart. A request refused with it is not stored.
	ErrStorage = errors.New("storage failed")
	// ErrOutcomeUnknown: a write failed and the broker could not record where the restart must
	// cut the log, so the request may or may not be stored. Retry it only with the same
	// idempotency key (which answers "duplicate" if it was stored).
	ErrOutcomeUnknown = errors.New("outcome unknown: the request may have been stored")
	// ErrNotLeader (cluster mode): this node does not accept writes because it is not the
	// serving leader of the raft group. Nothing was proposed; the gateway forwards the request
	// to the leader, or answers no_leader when none is known.
	ErrNotLeader = errors.New("not the cluster leader")
	// ErrNotInCluster (cluster mode): the operation is not available on a replicated broker
	// yet (see docs/cluster.md). Nothing was done.
	ErrNotInCluster = errors.New("not available in cluster mode")
)

// OffsetRangeError is returned (wrapping ErrOffsetOutOfRange) when a fetch asks for an
// offset before the start or past the end of a partition.
type OffsetRangeError struct {
	Offset      int64
	StartOffset int64
	EndOffset   int64
}

func (e *OffsetRangeError) Error() string {
	return fmt.Sprintf("offset %d is outside [%d, %d]", e.Offset, e.StartOffset, e.EndOffset)
}

func (e *OffsetRangeError) Unwrap() error { return ErrOffsetOutOfRange }

// ReservedName reports whether s is "." or "..": valid characters, but a URL path segment that
// clients resolve away, so no topic, group or member is so named.
func ReservedName(s string) bool { return s == "." || s == ".." }

// ValidName reports whether s is a valid topic or group name (API.md: ^[A-Za-z0-9._-]{1,249}$).
// A plain loop, not a regular expression: both doors call it on every request.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > 249 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// PartitionForKey is the documented key partitioner, the same in every client:
// FNV-1a 32-bit over the key bytes, modulo the partition count.
func PartitionForKey(key []byte, partitions int) int {
	h := fnv.New32a()
	h.Write(key)
	return int(h.Sum32() % uint32(partitions))
}

// Header is one message header. Order is kept.
type Header struct {
	Key   string
	Value string
}

// Message is a message to append.
type Message struct {
	// Key is nil when the message has no key; an empty non-nil slice is an empty key.
	Key []byte
	// Value holds the payload. When ValueJSON is true it is JSON text (validated by the caller)
	// and is returned verbatim as "value"; otherwise it is returned as "value_base64".
	Value     []byte
	ValueJSON bool
	Headers   []Header
	// Partition is the target partition, or -1 to let the broker choose
	// (hash of the key, or round-robin for unkeyed messages).
	Partition int
}

// Position is where a message was stored.
type Position struct {
	Partition int   `json:"partition"`
	Offset    int64 `json:"offset"`
}

// ProduceResult is the outcome of Produce.
type ProduceResult struct {
	// Offsets holds one position per message, in request order.
	Offsets []Position
	// Duplicate is true when the idempotency key had been seen: nothing was appended and
	// Offsets are those of the first request.
	Duplicate bool
}

// FetchedMessage is a message read from a partition. Its byte slices alias a buffer owned by
// the FetchResult; copy them to keep them past the next use of that result.
type FetchedMessage struct {
	Offset    int64
	Timestamp time.Time // broker append time, millisecond precision
	Key       []byte    // nil when the message has no key
	Value     []byte
	ValueJSON bool
	Headers   []Header
	// CRC is the record's stored CRC-32C (over timestamp, key, headers and value).
	CRC uint32
}

// FetchOptions bound a fetch.
type FetchOptions struct {
	Offset      int64
	MaxMessages int           // <= 0 means 100
	MaxBytes    int           // <= 0 means 1 MiB; at least one message is returned even if larger
	Wait        time.Duration // long-poll: wait up to this long for a message at Offset
}

// FetchResult is what Fetch returns.
type FetchResult struct {
	Messages    []FetchedMessage
	NextOffset  int64
	StartOffset int64
	EndOffset   int64 // the readable end: one past the last durable message
}

// TopicConfig is a topic's configuration.
type TopicConfig struct {
	Partitions int
	// RetentionAge deletes whole segments whose newest message is older than this; 0 = the broker default.
	RetentionAge time.Duration
	// RetentionBytes caps each partition's size, deleting its oldest segments; 0 = the broker default.
	RetentionBytes int64
}

// PartitionInfo describes one partition.
type PartitionInfo struct {
	Partition   int
	StartOffset int64
	EndOffset   int64
	Bytes       int64
}

// TopicInfo describes a topic.
type TopicInfo struct {
	Name       string
	Config     TopicConfig
	Partitions []PartitionInfo
}

// FlushStats describes one group commit, for metrics.
type FlushStats struct {
	Requests int           // produce requests acknowledged by this flush
	Messages int           // messages written
	Bytes    int           // bytes written to the log
	Write    time.Duration // time in write(2)
	Sync     time.Duration // time in fsync (0 when the policy did not sync)
}

// Observer receives events for metrics. Implementations must be fast and must not block.
type Observer interface {
	Flushed(FlushStats)
}

// ProposalObserver, when the Observer also implements it, receives in cluster mode the time
// from proposing each write to its entry being applied on the leader (replicate.go).
type ProposalObserver interface {
	Proposed(time.Duration)
}

// Stats are broker-wide counters.
type Stats struct {
	Topics          int
	Partitions      int
	MessagesIn      int64
	BytesIn         int64
	MessagesOut     int64
	BytesOut        int64
	Fsyncs          int64
	LogBytes        int64 // bytes in the commit log on disk
	PendingBytes    int64 // bytes waiting for the flusher
	RecoveredBytes  int64 // bytes replayed at the last open
	TruncatedBytes  int64 // bytes cut from a torn tail at the last open
	OpenDuration    time.Duration
	IdempotencyKeys int
	// IdempotencyDamaged is the number of idempotency files found damaged at the last open,
	// set aside under repair/ and rebuilt from the commit log (an idempotency-key rebuild).
	IdempotencyDamaged int
}
