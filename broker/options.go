package broker

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// FsyncMode says when appended bytes are forced to disk.
type FsyncMode int

const (
	// FsyncAlways acknowledges a produce only after an fsync covers it (the default).
	FsyncAlways FsyncMode = iota
	// FsyncInterval acknowledges after write(2) and fsyncs at most every Interval.
	// Transaction records (XA prepare, commit, rollback, heuristic decisions, forget, local
	// commits) are fsync'd before they are answered under every policy.
	FsyncInterval
	// FsyncNever acknowledges after write(2) and fsyncs only once per CheckpointInterval (so
	// that a checkpoint never names bytes that are not on disk), and for transaction records.
	FsyncNever
)

// FsyncPolicy is a parsed fsync setting: "always", "interval:<duration>" or "never".
type FsyncPolicy struct {
	Mode     FsyncMode
	Interval time.Duration
}

// ParseFsyncPolicy parses "always", "interval:10ms" or "never".
func ParseFsyncPolicy(s string) (FsyncPolicy, error) {
	switch {
	case s == "" || s == "always":
		return FsyncPolicy{Mode: FsyncAlways}, nil
	case s == "never":
		return FsyncPolicy{Mode: FsyncNever}, nil
	case strings.HasPrefix(s, "interval:"):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "interval:"))
		if err != nil || d <= 0 {
			return FsyncPolicy{}, fmt.Errorf("fsync policy %q: interval must be a positive duration such as interval:10ms", s)
		}
		return FsyncPolicy{Mode: FsyncInterval, Interval: d}, nil
	}
	return FsyncPolicy{}, fmt.Errorf("fsync policy %q: want always, interval:<duration> or never", s)
}

func (p FsyncPolicy) String() string {
	switch p.Mode {
	case FsyncInterval:
		return "interval:" + p.Interval.String()
	case FsyncNever:
		return "never"
	}
	return "always"
}

// Options configure a Broker. NewOptions returns the defaults; every field is documented there.
type Options struct {
	// Dir is the data directory. Required.
	Dir string
	// Fsync is the durability policy. Default: always.
	Fsync FsyncPolicy
	// SegmentBytes is the size at which the commit log rolls to a new segment. Default 1 GiB.
	SegmentBytes int64
	// IndexSegmentEntries is the number of entries per partition index segment. Default 1<<18.
	IndexSegmentEntries int
	// CheckpointInterval is how often index state is made durable so that start-up replays at
	// most this much of the log. Default 1s.
	CheckpointInterval time.Duration
	// CheckpointBytes also triggers a checkpoint after this many appended bytes. Default 256 MiB.
	CheckpointBytes int64
	// RetentionAge is the default per-topic retention by age. Default 168h.
	RetentionAge time.Duration
	// RetentionBytes is the default per-partition size cap. 0 (the default) means no cap.
	RetentionBytes int64
	// RetentionCheckInterval is how often retention runs. Default 1m.
	RetentionCheckInterval time.Duration
	// IdempotencyWindow is how long an Idempotency-Key is remembered. Default 24h.
	IdempotencyWindow time.Duration
	// MaxMessageBytes caps one message's key+headers+value. Default 1 MiB.
	MaxMessageBytes int
	// MaxFlushBytes caps the bytes one group commit writes. Default 8 MiB.
	MaxFlushBytes int
	// MaxPendingBytes is the back-pressure limit: Produce fails with ErrBackpressure when more
	// bytes than this wait for the flusher. Default 256 MiB.
	MaxPendingBytes int64
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Observer, when set, receives flush statistics.
	Observer Observer
	// Now is the clock; tests may replace it. Default time.Now.
	Now func() time.Time
	// Elapsed is the monotonic clock: the time since Open, never moved by a step of the wall
	// clock. Retention by age and the idempotency window never count an age longer than it
	// allows (clock.go). Default: measured on Now's monotonic reading (time.Now has one; with a
	// fake Now that has none it moves with Now). A test that steps Now's wall clock sets it.
	Elapsed func() time.Duration
	// Replicated opens the broker as a cluster member (replicate.go): its commit log is the
	// raft log, writes are proposed through the Proposer given to SetProposer and change state
	// only when applied. Fsync must be always; retention does not delete log segments yet.
	Replicated bool
}

// NewOptions returns Options with every default filled in for the data directory dir.
func NewOptions(dir string) Options {
	return Options{
		Dir:                    dir,
		Fsync:                  FsyncPolicy{Mode: FsyncAlways},
		SegmentBytes:           1 << 30,
		IndexSegmentEntries:    1 << 18,
		CheckpointInterval:     time.Second,
		CheckpointBytes:        256 << 20,
		RetentionAge:           168 * time.Hour,
		RetentionCheckInterval: time.Minute,
		IdempotencyWindow:      24 * time.Hour,
		MaxMessageBytes:        1 << 20,
		MaxFlushBytes:          8 << 20,
		MaxPendingBytes:        256 << 20,
		Logger:                 slog.Default(),
		Now:                    time.Now,
	}
}

// withDefaults fills zero fields from NewOptions.
func (o Options) withDefaults() Options {
	d := NewOptions(o.Dir)
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = d.SegmentBytes
	}
	if o.IndexSegmentEntries <= 0 {
		o.IndexSegmentEntries = d.IndexSegmentEntries
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = d.CheckpointInterval
	}
	if o.CheckpointBytes <= 0 {
		o.CheckpointBytes = d.CheckpointBytes
	}
	if o.RetentionAge < 0 {
		o.RetentionAge = 0
	} else if o.RetentionAge == 0 {
		o.RetentionAge = d.RetentionAge
	}
	if o.RetentionCheckInterval <= 0 {
		o.RetentionCheckInterval = d.RetentionCheckInterval
	}
	if o.IdempotencyWindow <= 0 {
		o.IdempotencyWindow = d.IdempotencyWindow
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = d.MaxMessageBytes
	}
	if o.MaxFlushBytes <= 0 {
		o.MaxFlushBytes = d.MaxFlushBytes
	}
	if o.MaxPendingBytes <= 0 {
		o.MaxPendingBytes = d.MaxPendingBytes
	}
	if o.Logger == nil {
		o.Logger = d.Logger
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	if o.Elapsed == nil {
		o.Elapsed = elapsedSince(o.Now)
	}
	return o
}
