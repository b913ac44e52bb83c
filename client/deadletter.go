package client

// Dead-letter handling, what MetaQ calls local recovery (its RecoverManager): a message whose
// handler fails is retried in place with backoff, then moved to the dead-letter topic
// <topic>.DLQ with the failure in its headers, and the consumer moves on. ReplayDeadLetters
// puts dead letters back. (Crash recovery is the broker's, in-doubt recovery the
// coordinator's: this file is neither.)

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/imagomq/imago/api"
)

// DLQSuffix is appended to a topic's name to name its dead-letter topic.
const DLQSuffix = ".DLQ"

// Headers of a dead letter. The message keeps its key, value and own headers.
const (
	// HeaderDLQError is the last handler error (at most 1024 bytes).
	HeaderDLQError = "imago-dlq-error"
	// HeaderDLQTopic is the topic the message was consumed from.
	HeaderDLQTopic = "imago-dlq-topic"
	// HeaderDLQPartition is its partition there.
	HeaderDLQPartition = "imago-dlq-partition"
	// HeaderDLQOffset is its offset there.
	HeaderDLQOffset = "imago-dlq-offset"
	// HeaderDLQAttempts is how many times the handler was called.
	HeaderDLQAttempts = "imago-dlq-attempts"
	// HeaderDLQGroup is the consumer group whose handler failed.
	HeaderDLQGroup = "imago-dlq-group"
	// HeaderDLQTime is when the message was dead-lettered (RFC 3339, UTC).
	HeaderDLQTime = "imago-dlq-time"
	// HeaderReplayGroup marks a replayed dead letter (ReplayDeadLetters): the group it is
	// meant for. A Consumer of any other group skips it, since that group handled the
	// original already.
	HeaderReplayGroup = "imago-replay-group"
	// HeaderReplayedFrom is "<dlq topic>/<partition>/<offset>" of a replayed dead letter.
	HeaderReplayedFrom = "imago-replayed-from"
)

// DLQTopic returns the name of topic's dead-letter topic.
func DLQTopic(topic string) string { return topic + DLQSuffix }

// RetryPolicy says how a failed message is retried before it is dead-lettered.
type RetryPolicy struct {
	// Attempts is how many times the handler is called for one message in all, the first
	// included (default 4; 1 means no retry).
	Attempts int
	// Backoff is the wait before the first retry, doubled for each next one (default 100ms),
	// with ±25% jitter.
	Backoff time.Duration
	// MaxBackoff caps the wait (default 5s).
	MaxBackoff time.Duration
}

func (p RetryPolicy) attempts() int {
	if p.Attempts <= 0 {
		return 4
	}
	return p.Attempts
}

func (p RetryPolicy) delay(n int) time.Duration {
	b, m := p.Backoff, p.MaxBackoff
	if b <= 0 {
		b = 100 * time.Millisecond
	}
	if m <= 0 {
		m = 5 * time.Second
	}
	return backoffDelay(n, b, m)
}

// HandlerError is returned by Run when a message still failed after its retries and dead
// letters are off (or its dead letter could not be stored for good).
type HandlerError struct {
	Topic     string
	Partition int
	Offset    int64
	Attempts  int
	Err       error
}

func (e *HandlerError) Error() string {
	return fmt.Sprintf("message %s/%d/%d failed after %d attempts: %v", e.Topic, e.Partition, e.Offset, e.Attempts, e.Err)
}

func (e *HandlerError) Unwrap() error { return e.Err }

// permanentError marks a handler error that retrying cannot fix (see Permanent).
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent wraps a handler error that retrying cannot fix (a malformed message): the consumer
// skips the remaining retries and dead-letters the message at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// recoverer retries failed messages and writes dead letters for one group.
type recoverer struct {
	c          *Client
	group      string
	policy     RetryPolicy
	deadLetter bool
	log        *slog.Logger

	mu         sync.Mutex
	partitions map[string]int // dead-letter topic -> its partition count, once ensured
}

// deliver calls fn until it succeeds or the attempts are spent, then dead-letters msg. It
// returns nil when the message is done (handled, or stored as a dead letter), ctx's error when
// ctx ended first, and a *HandlerError otherwise. A call of fn that returned nil is done even
// when ctx ended meanwhile: its message is committed on the way out.
func (r *recoverer) deliver(ctx context.Context, msg FetchedMessage, fn func(context.Context) error) error {
	n, err := r.retry(ctx, msg, fn)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !r.deadLetter {
		return &HandlerError{Topic: msg.Topic, Partition: msg.Partition, Offset: msg.Offset, Attempts: n, Err: err}
	}
	return r.toDLQ(ctx, msg, err, n)
}

// retry calls fn up to the policy's attempts (fewer if fn returns a Permanent error) and
// returns the number of calls and the last error.
func (r *recoverer) retry(ctx context.Context, msg FetchedMessage, fn func(context.Context) error) (int, error) {
	attempts := r.policy.attempts()
	var err error
	for n := 1; ; n++ {
		if err = fn(ctx); err == nil {
			return n, nil
		}
		var pe *permanentError
		if ctx.Err() != nil || n >= attempts || errors.As(err, &pe) {
			return n, err
		}
		d := r.policy.delay(n)
		r.log.Warn("handler failed; retrying", "topic", msg.Topic, "partition", msg.Partition, "offset", msg.Offset,
			"attempt", n, "of", attempts, "in", d.Round(time.Millisecond), "err", err)
		if !sleepCtx(ctx, d) {
			return n, err
		}
	}
}

// toDLQ stores msg in its dead-letter topic, retrying transient failures until ctx ends. It
// returns nil once the dead letter is durable.
//
// Every attempt sends the same request: the same key and the same dead letter (made once, with
// one imago-dlq-time). A request whose outcome is unknown (its answer lost, a 503
// outcome_unknown, a broker that stopped after acknowledging a write it had not fsync'd yet) is
// settled only by asking again with the same key and body: the broker answers the first
// outcome, "duplicate" when it is stored and its failure when the restart cuts it. The same key
// with another body is answered idempotency_key_reused whatever became of the first.
func (r *recoverer) toDLQ(ctx context.Context, msg FetchedMessage, cause error, attempts int) error {
	dl := DeadLetter(r.group, msg, cause, attempts)
	for n := 1; ; n++ {
		err := r.produceDLQ(ctx, msg, dl)
		if err == nil {
			r.log.Error("message moved to the dead-letter topic", "group", r.group, "topic", msg.Topic,
				"partition", msg.Partition, "offset", msg.Offset, "attempts", attempts, "dlq", DLQTopic(msg.Topic), "err", cause)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if IsCode(err, api.CodeIdempotencyKeyReused) {
			// The key names one message of one group (DeadLetterKey), and this call sends one
			// body only: its dead letter was stored by an earlier delivery of the message that
			// died before committing the offset; the headers differ (time, error text,
			// attempts), the message does not. Stored once.
			r.log.Warn("the message's dead letter was stored by an earlier attempt; not storing it again", "group", r.group, "topic", msg.Topic,
				"partition", msg.Partition, "offset", msg.Offset, "dlq", DLQTopic(msg.Topic))
			return nil
		}
		if permanent(err) {
			return &HandlerError{Topic: msg.Topic, Partition: msg.Partition, Offset: msg.Offset, Attempts: attempts,
				Err: fmt.Errorf("%w; and storing the dead letter in %s failed: %w", cause, DLQTopic(msg.Topic), err)}
		}
		r.log.Warn("storing a dead letter failed; retrying", "topic", DLQTopic(msg.Topic), "err", err)
		if !sleepCtx(ctx, backoffDelay(n, 100*time.Millisecond, 5*time.Second)) {
			return ctx.Err()
		}
	}
}

// produceDLQ sends dl, the dead letter of msg, to msg's dead-letter topic.
func (r *recoverer) produceDLQ(ctx context.Context, msg FetchedMessage, dl Message) error {
	dlq := DLQTopic(msg.Topic)
	parts, err := r.ensureDLQ(ctx, msg.Topic)
	if err != nil {
		return err
	}
	dl.Partition = Ptr(msg.Partition % parts)
	_, err = r.c.Produce(ctx, dlq, []Message{dl}, ProduceOptions{IdempotencyKey: DeadLetterKey(r.group, msg)})
	return err
}

// ensureDLQ creates topic's dead-letter topic, with topic's partition count, unless it exists,
// and returns its partition count.
func (r *recoverer) ensureDLQ(ctx context.Context, topic string) (int, error) {
	dlq := DLQTopic(topic)
	r.mu.Lock()
	n, ok := r.partitions[dlq]
	r.mu.Unlock()
	if ok {
		return n, nil
	}
	src, err := r.c.DescribeTopic(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("describe %s: %w", topic, err)
	}
	n = max(len(src.Partitions), 1)
	if _, err := r.c.CreateTopic(ctx, dlq, TopicConfig{Partitions: n}); err != nil {
		if !IsStatus(err, 409) {
			return 0, fmt.Errorf("create dead-letter topic %s: %w", dlq, err)
		}
		// It exists with another configuration: use it as it is.
		t, err := r.c.DescribeTopic(ctx, dlq)
		if err != nil {
			return 0, fmt.Errorf("describe %s: %w", dlq, err)
		}
		n = max(len(t.Partitions), 1)
	}
	r.mu.Lock()
	if r.partitions == nil {
		r.partitions = map[string]int{}
	}
	r.partitions[dlq] = n
	r.mu.Unlock()
	return n, nil
}

// DeadLetter returns the dead letter of msg: its key, value and headers, plus the
// imago-dlq-* headers. Partition is left to the caller.
func DeadLetter(group string, msg FetchedMessage, cause error, attempts int) Message {
	h := make(map[string]string, len(msg.Headers)+7)
	for k, v := range msg.Headers {
		h[k] = v
	}
	delete(h, HeaderReplayGroup)
	delete(h, HeaderReplayedFrom)
	h[HeaderDLQError] = truncateUTF8(cause.Error(), 1024)
	h[HeaderDLQTopic] = msg.Topic
	h[HeaderDLQPartition] = strconv.Itoa(msg.Partition)
	h[HeaderDLQOffset] = strconv.FormatInt(msg.Offset, 10)
	h[HeaderDLQAttempts] = strconv.Itoa(attempts)
	h[HeaderDLQGroup] = group
	h[HeaderDLQTime] = time.Now().UTC().Format(time.RFC3339Nano)
	return Message{Key: msg.Key, Value: msg.Value, ValueBase64: msg.ValueBase64, Headers: h}
}

// DeadLetterKey is the idempotency key of msg's dead letter for group: the same message
// dead-lettered twice (a crash between the dead letter and the offset commit) is stored once,
// within the server's dedupe window (24 h by default). A consumer retries one dead letter with
// the same key and the same body, so a lost answer is settled by the broker's first outcome. A
// second delivery of the message makes a dead letter whose headers differ (time, error,
// attempts), so the broker answers idempotency_key_reused; the consumer takes that answer as
// "stored already" (the key names exactly one message of one group).
func DeadLetterKey(group string, msg FetchedMessage) string {
	return idemKey("imago-dlq", group, msg.Topic, strconv.Itoa(msg.Partition), strconv.FormatInt(msg.Offset, 10))
}

// idemKey joins parts with "/" under a prefix, or hashes them when that would pass the
// server's 255-byte limit.
func idemKey(prefix string, parts ...string) string {
	k := prefix + "/" + strings.Join(parts, "/")
	if len(k) <= 255 {
		return k
	}
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return prefix + "/sha256:" + hex.EncodeToString(sum[:])
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// ReplayOptions tune ReplayDeadLetters.
type ReplayOptions struct {
	// Group is the consumer group whose committed offsets on the dead-letter topic record what
	// was replayed. Default "imago-dlq-replay".
	Group string
	// From is where to start in each partition of the dead-letter topic: "committed" (the
	// default: after what Group replayed before; the start when it never did), "earliest", or
	// an offset ("1200").
	From string
	// Partition, when not nil, replays that dead-letter partition only.
	Partition *int
	// Max stops after this many messages (0: no limit).
	Max int
}

// ReplayedPartition says what ReplayDeadLetters did in one partition of the dead-letter topic.
type ReplayedPartition struct {
	Partition int   `json:"partition"`
	From      int64 `json:"from"`
	To        int64 `json:"to"`
	Replayed  int   `json:"replayed"`
}

// ReplayResult answers ReplayDeadLetters.
type ReplayResult struct {
	DLQTopic   string              `json:"dlq_topic"`
	Group      string              `json:"group"`
	Replayed   int                 `json:"replayed"`
	Partitions []ReplayedPartition `json:"partitions"`
}

// ReplayDeadLetters puts the dead letters of topic back: it reads <topic>.DLQ up to its end at
// the start of the call and produces each message again to the topic and partition it came
// from (imago-dlq-topic, imago-dlq-partition), without the imago-dlq-* headers and with
// HeaderReplayGroup set to the group that dead-lettered it, so that only that group handles it
// again (a Consumer of another group skips it). Each message is produced with an idempotency
// key made from its dead-letter position, so a replay cut short and run again stores no
// message twice (within the server's dedupe window). After each page, the dead-letter
// position is committed for opts.Group, which joins the dead-letter topic as a clustered
// member for the time of the call.
func (c *Client) ReplayDeadLetters(ctx context.Context, topic string, opts ReplayOptions) (*ReplayResult, error) {
	dlq := DLQTopic(topic)
	if opts.Group == "" {
		opts.Group = "imago-dlq-replay"
	}
	var fromOffset int64 = -1
	switch opts.From {
	case "", "committed", "earliest":
	default:
		n, err := strconv.ParseInt(opts.From, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("replay from %q: want committed, earliest or an offset", opts.From)
		}
		fromOffset = n
	}
	desc, err := c.DescribeTopic(ctx, dlq)
	if err != nil {
		return nil, fmt.Errorf("describe %s: %w", dlq, err)
	}
	join := func() (*Membership, error) {
		return c.JoinGroup(ctx, opts.Group, JoinGroupRequest{Topics: []string{dlq}, Mode: Clustered, SessionTimeoutMS: 60000})
	}
	m, err := join()
	if err != nil {
		return nil, fmt.Errorf("join group %s on %s: %w", opts.Group, dlq, err)
	}
	member := m.MemberID
	defer func() {
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = c.LeaveGroup(lctx, opts.Group, member)
	}()
	owned := map[int]bool{}
	for _, a := range m.Assignments {
		if a.Topic == dlq {
			owned[a.Partition] = true
		}
	}
	committed := map[int]int64{}
	if opts.From == "" || opts.From == "committed" {
		g, err := c.GroupOffsets(ctx, opts.Group)
		if err != nil && !IsStatus(err, 404) {
			return nil, fmt.Errorf("offsets of group %s: %w", opts.Group, err)
		}
		if g != nil {
			for _, o := range g.Offsets {
				if o.Topic == dlq {
					committed[o.Partition] = o.Offset
				}
			}
		}
	}
	res := &ReplayResult{DLQTopic: dlq, Group: opts.Group}
	for _, p := range desc.Partitions {
		if opts.Partition != nil && p.Partition != *opts.Partition {
			continue
		}
		if !owned[p.Partition] {
			return res, fmt.Errorf("partition %d of %s is held by another member of group %s; stop it first", p.Partition, dlq, opts.Group)
		}
		start := p.StartOffset
		switch {
		case fromOffset >= 0:
			start = max(fromOffset, p.StartOffset)
		case opts.From == "earliest":
		default:
			if off, ok := committed[p.Partition]; ok {
				start = max(off, p.StartOffset)
			}
		}
		rp := ReplayedPartition{Partition: p.Partition, From: start, To: start}
		off := start
		for off < p.EndOffset && (opts.Max == 0 || res.Replayed < opts.Max) {
			page, err := c.Fetch(ctx, dlq, p.Partition, FetchOptions{Offset: off, MaxMessages: 100})
			if err != nil {
				return res, fmt.Errorf("read %s/%d at %d: %w", dlq, p.Partition, off, err)
			}
			if len(page.Messages) == 0 {
				break
			}
			for _, dm := range page.Messages {
				if dm.Offset >= p.EndOffset || (opts.Max > 0 && res.Replayed >= opts.Max) {
					break
				}
				orig, msg := replayMessage(topic, dm)
				key := idemKey("imago-dlq-replay", dlq, strconv.Itoa(dm.Partition), strconv.FormatInt(dm.Offset, 10))
				if _, err := c.Produce(ctx, orig, []Message{msg}, ProduceOptions{IdempotencyKey: key}); err != nil {
					return res, fmt.Errorf("replay %s/%d/%d to %s: %w", dlq, dm.Partition, dm.Offset, orig, err)
				}
				off = dm.Offset + 1
				rp.Replayed++
				res.Replayed++
			}
			commitOffset := []GroupOffset{{Topic: dlq, Partition: p.Partition, Offset: off}}
			err = c.CommitGroup(ctx, opts.Group, member, commitOffset)
			if isGone(err) { // our session timed out while replaying: join again and commit
				if m, err = join(); err == nil {
					member = m.MemberID
					err = c.CommitGroup(ctx, opts.Group, member, commitOffset)
				}
			}
			if err != nil {
				return res, fmt.Errorf("commit %s/%d at %d for group %s: %w", dlq, p.Partition, off, opts.Group, err)
			}
			rp.To = off
		}
		res.Partitions = append(res.Partitions, rp)
	}
	return res, nil
}

// replayMessage turns a dead letter back into the message it was, for the topic it came from.
func replayMessage(topic string, dm FetchedMessage) (string, Message) {
	orig := topic
	if t := dm.Headers[HeaderDLQTopic]; t != "" {
		orig = t
	}
	h := make(map[string]string, len(dm.Headers))
	for k, v := range dm.Headers {
		if !strings.HasPrefix(k, "imago-dlq-") {
			h[k] = v
		}
	}
	if g := dm.Headers[HeaderDLQGroup]; g != "" {
		h[HeaderReplayGroup] = g
	}
	h[HeaderReplayedFrom] = fmt.Sprintf("%s/%d/%d", dm.Topic, dm.Partition, dm.Offset)
	msg := Message{Key: dm.Key, Value: dm.Value, ValueBase64: dm.ValueBase64, Headers: h}
	if p, err := strconv.Atoi(dm.Headers[HeaderDLQPartition]); err == nil && p >= 0 {
		msg.Partition = Ptr(p)
	}
	return orig, msg
}
