package textproto

import (
	"context"
	"log/slog"
	"time"

	"github.com/imagomq/imago/internal/auth"
)

// Token is one auth token and its rights, the same type as the HTTP door's (internal/auth).
type Token = auth.Token

// GroupOffset is a committed consumer offset: Next is the next offset the group reads.
type GroupOffset struct {
	Group     string
	Topic     string
	Partition int
	Next      int64
}

// OffsetStore is where the offset command commits and what stats groups lists. It is the
// part of an offset store this door needs; the method names differ from offsetdb.Store's so
// that a store (or a small adapter) can offer both.
type OffsetStore interface {
	// CommitOffset makes next the group's offset of the partition; it returns after the
	// offset is durable. A commit never moves an offset backwards.
	CommitOffset(ctx context.Context, group, topic string, partition int, next int64) error
	// GroupOffsets lists every committed offset of every group.
	GroupOffsets(ctx context.Context) ([]GroupOffset, error)
}

// Options configure a Server. NewOptions returns the defaults.
type Options struct {
	// Addr is the listen address of ListenAndServe. Default 127.0.0.1:8123.
	Addr string
	// MaxConnections caps open connections; one more is answered "result 503" and closed.
	// Default 1024.
	MaxConnections int
	// IdleTimeout closes a connection that sends no request for this long. Default 5m.
	IdleTimeout time.Duration
	// AuthTimeout, when Tokens are set, closes a connection that has not authenticated this
	// long after it was accepted (answered "result 401"); empty lines do not extend it.
	// Default 10s.
	AuthTimeout time.Duration
	// PayloadTimeout bounds the wait for the next bytes of a put payload once its line is
	// read: the deadline moves on while bytes keep arriving. Past it, or past PayloadMaxTime,
	// the put is answered "result 400" (truncated payload) and the connection is closed, since
	// the late bytes cannot be told from requests. Default 10s.
	PayloadTimeout time.Duration
	// PayloadMaxTime caps the time a whole put payload may take to arrive, however steadily
	// it comes. Default 2m (a 1 MiB payload needs about 9 KB/s).
	PayloadMaxTime time.Duration
	// WriteTimeout bounds one write of answers to a client, and after Close the writing of
	// all the answers still queued for it. Default 30s.
	WriteTimeout time.Duration
	// AnswerBufferBytes bounds the answers a connection may have waiting to be written: while
	// more are queued, its next request is not read (a client that never reads is then closed
	// by WriteTimeout). At most one answer more is held. Default 16 MiB.
	AnswerBufferBytes int
	// MaxPayloadBytes caps a put's declared length; a larger one is answered "result 413" and
	// the connection is closed. Default 1 MiB (the broker's default message limit).
	MaxPayloadBytes int
	// MaxLineBytes caps a request line; a longer one is answered "result 400" and the
	// connection is closed. Default 4096.
	MaxLineBytes int
	// MaxGetBytes caps get's max_bytes (a larger request is served up to this). Default 8 MiB.
	MaxGetBytes int
	// Tokens enables auth when non-empty: the first request must be auth.
	Tokens []Token
	// Offsets is where offset commits go and what stats groups lists. Nil: offset answers
	// 503 and stats groups is empty.
	Offsets OffsetStore
	// FsyncP99 reports the broker's recent fsync p99 for stats (see FsyncStats). Nil: 0.
	FsyncP99 func() time.Duration
	// Version is what version answers, and stats shows. Default "dev".
	Version string
	// BrokerID is stats' broker_id. Default 0.
	BrokerID int
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
}

// Defaults of Options.
const (
	DefaultAddr            = "127.0.0.1:8123"
	DefaultMaxConnections  = 1024
	DefaultIdleTimeout     = 5 * time.Minute
	DefaultAuthTimeout     = 10 * time.Second
	DefaultPayloadTimeout  = 10 * time.Second
	DefaultPayloadMaxTime  = 2 * time.Minute
	DefaultWriteTimeout    = 30 * time.Second
	DefaultAnswerBuffer    = 16 << 20
	DefaultMaxPayloadBytes = 1 << 20
	DefaultMaxLineBytes    = 4096
	DefaultMaxGetBytes     = 8 << 20
)

// NewOptions returns Options with every default filled in.
func NewOptions() Options {
	return Options{
		Addr:              DefaultAddr,
		MaxConnections:    DefaultMaxConnections,
		IdleTimeout:       DefaultIdleTimeout,
		AuthTimeout:       DefaultAuthTimeout,
		PayloadTimeout:    DefaultPayloadTimeout,
		PayloadMaxTime:    DefaultPayloadMaxTime,
		WriteTimeout:      DefaultWriteTimeout,
		AnswerBufferBytes: DefaultAnswerBuffer,
		MaxPayloadBytes:   DefaultMaxPayloadBytes,
		MaxLineBytes:      DefaultMaxLineBytes,
		MaxGetBytes:       DefaultMaxGetBytes,
		Version:           "dev",
		Logger:            slog.Default(),
	}
}

func (o Options) withDefaults() Options {
	d := NewOptions()
	if o.Addr == "" {
		o.Addr = d.Addr
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = d.MaxConnections
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = d.IdleTimeout
	}
	if o.AuthTimeout <= 0 {
		o.AuthTimeout = d.AuthTimeout
	}
	if o.PayloadTimeout <= 0 {
		o.PayloadTimeout = d.PayloadTimeout
	}
	if o.PayloadMaxTime <= 0 {
		o.PayloadMaxTime = d.PayloadMaxTime
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = d.WriteTimeout
	}
	if o.AnswerBufferBytes <= 0 {
		o.AnswerBufferBytes = d.AnswerBufferBytes
	}
	if o.MaxPayloadBytes <= 0 {
		o.MaxPayloadBytes = d.MaxPayloadBytes
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = d.MaxLineBytes
	}
	if o.MaxLineBytes < 256 {
		o.MaxLineBytes = 256
	}
	if o.MaxGetBytes <= 0 {
		o.MaxGetBytes = d.MaxGetBytes
	}
	if o.Version == "" {
		o.Version = d.Version
	}
	if o.Logger == nil {
		o.Logger = d.Logger
	}
	return o
}
