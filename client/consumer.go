package client

// This file holds Consumer, the poll loop over the consumer-group calls of groups.go, and its
// options.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/api"
)

// Handler processes one message. A nil return means done: the message's offset may be
// committed. An error means "not done": the consumer retries the message (ConsumerRetry) and
// then, unless dead letters are off, moves it to the dead-letter topic. ctx ends when the
// consumer stops.
type Handler func(ctx context.Context, msg FetchedMessage) error

// ConsumerOption configures a Consumer or a TxConsumer.
type ConsumerOption func(*consumerConfig)

type consumerConfig struct {
	mode           string
	consumerID     string
	from           string
	sessionTimeout time.Duration
	maxMessages    int
	maxBytes       int
	wait           time.Duration
	concurrency    int
	retry          RetryPolicy
	deadLetter     bool
	migrate        bool
	logger         *slog.Logger
}

func defaultConsumerConfig() consumerConfig {
	return consumerConfig{
		mode:        Clustered,
		maxMessages: 100,
		wait:        5 * time.Second,
		concurrency: 8,
		retry:       RetryPolicy{Attempts: 4, Backoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second},
		deadLetter:  true,
		migrate:     true,
		logger:      slog.Default(),
	}
}

// ConsumerMode is Clustered (the default: partitions shared among the group's members) or
// Broadcast (every member gets every message).
func ConsumerMode(mode string) ConsumerOption { return func(c *consumerConfig) { c.mode = mode } }

// ConsumerID names this consumer across restarts (the join's consumer_id): a consumer that
// joins with the ID of a live member replaces it at once, instead of waiting for the old
// member's session to time out, and a broadcast consumer's offsets are kept under it. Give
// each process its own stable ID (host name, pod name). Default: none.
func ConsumerID(id string) ConsumerOption { return func(c *consumerConfig) { c.consumerID = id } }

// ConsumerStartFrom is where a broadcast member without a committed offset starts: "latest"
// (the server's default) or "earliest". Clustered groups always start at the earliest offset.
func ConsumerStartFrom(from string) ConsumerOption { return func(c *consumerConfig) { c.from = from } }

// ConsumerSessionTimeout asks the server to remove the member when it has not polled for d
// (1s to 5m; the server's default is 30s). One poll's handling, retries included, must finish
// well within it, or the member loses its partitions mid-batch.
func ConsumerSessionTimeout(d time.Duration) ConsumerOption {
	return func(c *consumerConfig) { c.sessionTimeout = d }
}

// ConsumerMaxMessages caps the messages of one poll (default 100).
func ConsumerMaxMessages(n int) ConsumerOption { return func(c *consumerConfig) { c.maxMessages = n } }

// ConsumerMaxBytes caps the bytes of one poll (default: the server's, 1 MiB).
func ConsumerMaxBytes(n int) ConsumerOption { return func(c *consumerConfig) { c.maxBytes = n } }

// ConsumerPollWait is how long one poll waits for a message (default 5s; at most a third of
// the session timeout is used).
func ConsumerPollWait(d time.Duration) ConsumerOption { return func(c *consumerConfig) { c.wait = d } }

// ConsumerConcurrency is how many partitions are handled at once (default 8). Messages of one
// partition are always handled one at a time, in offset order.
func ConsumerConcurrency(n int) ConsumerOption { return func(c *consumerConfig) { c.concurrency = n } }

// ConsumerRetry sets how a failed message is retried before it is dead-lettered.
func ConsumerRetry(p RetryPolicy) ConsumerOption { return func(c *consumerConfig) { c.retry = p } }

// ConsumerDeadLetter turns the dead-letter topic on (the default) or off. Off, a message that
// still fails after its retries stops Run with a *HandlerError: nothing is skipped, and the
// next consumer of the partition starts again at that message.
func ConsumerDeadLetter(on bool) ConsumerOption { return func(c *consumerConfig) { c.deadLetter = on } }

// ConsumerMigrate says whether a TxConsumer applies Imago's migrations (the offset table) to
// the application's database when Run starts (default true). Turn it off when the database
// user may not run DDL, and run `imago migrate --dsn ...` instead.
func ConsumerMigrate(on bool) ConsumerOption { return func(c *consumerConfig) { c.migrate = on } }

// ConsumerLogger receives the consumer's logs (joins, rebalances, retries, dead letters).
// Default slog.Default().
func ConsumerLogger(l *slog.Logger) ConsumerOption { return func(c *consumerConfig) { c.logger = l } }

// Consumer is a member of a consumer group over the HTTP API: it joins, polls, hands each
// message to a Handler and commits what was handled.
//
// # Delivery
//
// Run polls the member's partitions and hands their messages to the handler, one at a time
// per partition in offset order (several partitions at once, ConsumerConcurrency). After a
// poll's messages are handled it commits, per partition, the offset after the last handled
// message, and only then polls again. A message is committed only after its handler returned
// nil (or after it was stored in the dead-letter topic), so nothing is lost; but a crash
// between handling and commit, or a rebalance, hands a message to the group again: delivery
// is at least once. A poll whose answer was lost on the way (a cut connection, a timeout, a
// body that could not be read) has moved the server's cursor past its messages; every poll
// tells the server where the consumer is in each partition it has handled messages of, and
// that it has nothing of the others (PollOptions.PositionsComplete), so the server reads
// those messages again, also for a partition the consumer has just joined or gained. Make the handler idempotent, or use a TxConsumer to get exactly-once
// effects in a database.
//
// # Failures (local recovery)
//
// A handler error is retried in place with exponential backoff (ConsumerRetry). When the
// attempts are spent the message goes to the dead-letter topic <topic>.DLQ (created by the
// consumer with the partition count of its topic when missing), with the failure in its
// headers (HeaderDLQError, ...), and the offset moves on; `imago dlq replay` puts it back.
// The dead letter's idempotency key is made from (group, topic, partition, offset), so a crash
// between the dead letter and the commit never makes two. With ConsumerDeadLetter(false), Run
// stops with a *HandlerError instead.
//
// # Membership and rebalances
//
// Every poll is the member's heartbeat. When the group's membership changes, the server moves
// partitions between members; a poll's answer carries the member's current assignment, and
// the consumer forgets what it knew of a partition it lost (positions, offsets not yet
// committed: the new owner starts at the group's committed offset). A member the server
// removed (404 unknown_member: its session timed out) joins again. When ctx ends, Run commits
// what was handled and leaves the group (DELETE), so the partitions move at once.
type Consumer struct {
	c      *Client
	group  string
	topics []string
	cfg    consumerConfig
	rec    *recoverer

	running atomic.Bool

	// Hooks of a TxConsumer; nil for a plain Consumer.
	initPos    func(ctx context.Context, tp Assignment) (int64, bool, error)
	fillGaps   bool
	bestEffort bool // broker commits are informational (TxConsumer): failures are logged only

	// State of one Run; touched by the Run goroutine only, except pos (see mu).
	memberID   string
	generation int64
	assigned   map[Assignment]bool // nil until the server told us
	pending    map[Assignment]int64
	mu         sync.Mutex
	pos        map[Assignment]int64 // next offset to hand over, per partition
}

// NewConsumer returns a consumer of topics as a member of group. Nothing is sent until Run.
func NewConsumer(c *Client, group string, topics []string, opts ...ConsumerOption) *Consumer {
	cfg := defaultConsumerConfig()
	for _, o := range opts {
		o(&cfg)
	}
	cfg.concurrency = max(cfg.concurrency, 1)
	cs := &Consumer{c: c, group: group, topics: slices.Clone(topics), cfg: cfg}
	cs.rec = &recoverer{c: c, group: group, policy: cfg.retry, deadLetter: cfg.deadLetter, log: cfg.logger}
	return cs
}

// MemberID returns the member id of the current membership ("" when not joined).
func (cs *Consumer) MemberID() string {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.memberID
}

// Run consumes until ctx ends (then it commits what was handled, leaves the group and returns
// nil) or a permanent error: the server refused the join (unknown topic, no right, ...), or a
// message failed with dead letters off (*HandlerError). Transient failures (the server down,
// 429, 503) are retried with backoff. Run may not be called twice at once.
//
// Delivery is at least once: a message's offset is committed only after its handler returned
// nil (on the way out too: the final commit does not depend on ctx). A handler that returns an
// error because Run's context ended, or a crash, leaves its message uncommitted, and the next
// run delivers it again; make handlers idempotent, or consume exactly once into a database
// with TxConsumer.
func (cs *Consumer) Run(ctx context.Context, h Handler) error {
	if h == nil {
		return errors.New("client: Consumer.Run: nil handler")
	}
	return cs.loop(ctx, func(ctx context.Context, tp Assignment, msgs []FetchedMessage) (int64, bool, error) {
		next, ok := int64(0), false
		for _, m := range msgs {
			if ctx.Err() != nil {
				break
			}
			if err := cs.rec.deliver(ctx, m, func(ctx context.Context) error { return h(ctx, m) }); err != nil {
				if ctx.Err() != nil {
					break // stopping: the message is not handled
				}
				return next, ok, err
			}
			next, ok = m.Offset+1, true
		}
		return next, ok, nil
	})
}

// processor handles the messages of one partition (sorted, none below the partition's
// position) and returns the offset after the last message it finished, ok=false if none. A
// non-nil error stops Run after the commit of what was finished.
type processor func(ctx context.Context, tp Assignment, msgs []FetchedMessage) (next int64, ok bool, err error)

func (cs *Consumer) loop(ctx context.Context, process processor) error {
	if !cs.running.CompareAndSwap(false, true) {
		return errors.New("client: consumer is already running")
	}
	defer cs.running.Store(false)
	cs.pending = map[Assignment]int64{}
	cs.pos = map[Assignment]int64{}
	cs.assigned = nil
	defer cs.shutdown(ctx)

	failures := 0
	pause := func() bool {
		failures++
		return sleepCtx(ctx, backoffDelay(failures, 100*time.Millisecond, 5*time.Second))
	}
	for {
		if ctx.Err() != nil {
			return nil
		}
		if cs.MemberID() == "" {
			if err := cs.join(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if permanent(err) {
					return fmt.Errorf("join group %s: %w", cs.group, err)
				}
				cs.cfg.logger.Warn("join failed; retrying", "group", cs.group, "err", err)
				if !pause() {
					return nil
				}
				continue
			}
		}
		res, err := cs.c.PollGroup(ctx, cs.group, cs.MemberID(), cs.pollOptions())
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if isGone(err) {
				cs.cfg.logger.Warn("membership lost; joining again", "group", cs.group, "member", cs.MemberID(), "err", err)
				cs.dropMembership()
				continue
			}
			if permanent(err) {
				return fmt.Errorf("poll group %s: %w", cs.group, err)
			}
			cs.cfg.logger.Warn("poll failed; retrying", "group", cs.group, "err", err)
			if !pause() {
				return nil
			}
			continue
		}
		failures = 0
		cs.reassign(res.Generation, res.Assignments)
		batches, err := cs.batches(ctx, res.Messages)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var gone *positionGoneError
			var past *pastEndError
			if errors.As(err, &gone) || errors.As(err, &past) {
				return err // an operator must decide: retrying cannot change it
			}
			cs.cfg.logger.Warn("reading positions failed; retrying", "group", cs.group, "err", err)
			if !pause() {
				return nil
			}
			continue
		}
		herr := cs.processAll(ctx, batches, process)
		cs.commit(ctx)
		if herr != nil {
			return herr
		}
	}
}

// pollOptions bounds the next poll and says where the consumer is. cs.pos holds a position
// for every partition the consumer has handled messages of since it gained it (and, for a
// TxConsumer, every partition whose offset its database holds); the polls run one at a time,
// after the previous answer's messages were handled, so the positions are complete: a
// partition without one is one the consumer got nothing of, and the server reads it again
// from where the member started it. That covers an answer lost on the way before the
// consumer had any position for the partition (the first poll after a join or a rebalance).
func (cs *Consumer) pollOptions() PollOptions {
	o := PollOptions{MaxMessages: cs.cfg.maxMessages, MaxBytes: cs.cfg.maxBytes, Wait: cs.cfg.wait, PositionsComplete: true}
	if cs.cfg.sessionTimeout > 0 && o.Wait > cs.cfg.sessionTimeout/3 {
		o.Wait = cs.cfg.sessionTimeout / 3
	}
	cs.mu.Lock()
	for tp, off := range cs.pos {
		o.Positions = append(o.Positions, GroupOffset{Topic: tp.Topic, Partition: tp.Partition, Offset: off})
	}
	cs.mu.Unlock()
	return o
}

func (cs *Consumer) join(ctx context.Context) error {
	req := JoinGroupRequest{Topics: cs.topics, Mode: cs.cfg.mode, From: cs.cfg.from, ConsumerID: cs.cfg.consumerID}
	if cs.cfg.sessionTimeout > 0 {
		req.SessionTimeoutMS = cs.cfg.sessionTimeout.Milliseconds()
	}
	m, err := cs.c.JoinGroup(ctx, cs.group, req)
	if err != nil {
		return err
	}
	cs.mu.Lock()
	cs.memberID = m.MemberID
	cs.mu.Unlock()
	if st := time.Duration(m.SessionTimeoutMS) * time.Millisecond; st > 0 && (cs.cfg.sessionTimeout == 0 || st < cs.cfg.sessionTimeout) {
		cs.cfg.sessionTimeout = st
	}
	cs.cfg.logger.Info("joined group", "group", cs.group, "member", m.MemberID, "generation", m.Generation,
		"partitions", len(m.Assignments), "session_timeout_ms", m.SessionTimeoutMS)
	cs.reassign(m.Generation, m.Assignments)
	return nil
}

// dropMembership forgets the member and everything learnt under it: the next owner of each
// partition starts at the group's committed offset.
func (cs *Consumer) dropMembership() {
	cs.mu.Lock()
	cs.memberID = ""
	clear(cs.pos)
	cs.mu.Unlock()
	clear(cs.pending)
	cs.assigned = nil
}

// reassign records the member's assignment and forgets the partitions it lost.
func (cs *Consumer) reassign(generation int64, as []Assignment) {
	next := make(map[Assignment]bool, len(as))
	for _, a := range as {
		next[a] = true
	}
	var lost []Assignment
	for a := range cs.assigned {
		if !next[a] {
			lost = append(lost, a)
		}
	}
	cs.mu.Lock()
	for _, a := range lost {
		delete(cs.pos, a)
		delete(cs.pending, a)
	}
	cs.mu.Unlock()
	if generation != cs.generation || len(lost) > 0 {
		slices.SortFunc(lost, compareAssignments)
		cs.cfg.logger.Info("assignment", "group", cs.group, "member", cs.MemberID(), "generation", generation,
			"partitions", len(next), "lost", fmt.Sprint(lost))
	}
	cs.generation = generation
	cs.assigned = next
}

func compareAssignments(a, b Assignment) int {
	return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
}

// batch is the messages of one partition in one poll.
type batch struct {
	tp   Assignment
	msgs []FetchedMessage
}

// batches groups msgs by partition in offset order and drops what is not ours to handle:
// partitions not assigned, offsets below the partition's position (already handled), and
// replayed dead letters meant for another group (they only move the position).
func (cs *Consumer) batches(ctx context.Context, msgs []FetchedMessage) ([]batch, error) {
	by := map[Assignment][]FetchedMessage{}
	for _, m := range msgs {
		tp := Assignment{Topic: m.Topic, Partition: m.Partition}
		if len(cs.assigned) > 0 && !cs.assigned[tp] {
			continue
		}
		by[tp] = append(by[tp], m)
	}
	out := make([]batch, 0, len(by))
	for tp, ms := range by {
		slices.SortFunc(ms, func(a, b FetchedMessage) int { return cmp.Compare(a.Offset, b.Offset) })
		pos, known := cs.position(tp)
		if !known && cs.initPos != nil {
			p, ok, err := cs.initPos(ctx, tp)
			if err != nil {
				return nil, err
			}
			if ok {
				pos, known = p, true
				cs.setPosition(tp, p)
			}
		}
		if known {
			ms = fromOffset(ms, pos)
			if cs.fillGaps && len(ms) > 0 && ms[0].Offset > pos {
				gap, err := cs.fetchRange(ctx, tp, pos, ms[0].Offset)
				var e *Error
				if errors.As(err, &e) && e.Code == api.CodeOffsetOutOfRange {
					// Retention deleted what the stored offset points at: retrying cannot
					// bring it back, and an operator must decide (as realign says).
					return nil, &positionGoneError{tp: tp, stored: pos, start: e.StartOffset, err: err}
				}
				if err != nil {
					return nil, err
				}
				ms = append(gap, ms...)
			}
		}
		if len(ms) > 0 {
			out = append(out, batch{tp, ms})
		}
	}
	slices.SortFunc(out, func(a, b batch) int { return compareAssignments(a.tp, b.tp) })
	return out, nil
}

// positionGoneError: the offset a transactional consumer's database holds for a partition is
// below the partition's start (retention deleted messages the consumer never applied). Run
// stops with it.
type positionGoneError struct {
	tp     Assignment
	stored int64
	start  *int64
	err    error
}

func (e *positionGoneError) Error() string {
	start := "unknown"
	if e.start != nil {
		start = strconv.FormatInt(*e.start, 10)
	}
	return fmt.Sprintf("transactional consumer: %s/%d: offset %d stored in the database is no longer in the topic (it starts at %s): "+
		"retention deleted messages this consumer never applied; move the stored offset once they are accounted for",
		e.tp.Topic, e.tp.Partition, e.stored, start)
}

func (e *positionGoneError) Unwrap() error { return e.err }

// fromOffset returns the messages of msgs (sorted by offset) at offset off and after.
func fromOffset(msgs []FetchedMessage, off int64) []FetchedMessage {
	i := 0
	for i < len(msgs) && msgs[i].Offset < off {
		i++
	}
	return msgs[i:]
}

// fetchRange reads offsets [from, to) of a partition directly (a TxConsumer whose database is
// behind the broker-side group offset).
func (cs *Consumer) fetchRange(ctx context.Context, tp Assignment, from, to int64) ([]FetchedMessage, error) {
	var out []FetchedMessage
	for from < to {
		res, err := cs.c.Fetch(ctx, tp.Topic, tp.Partition, FetchOptions{Offset: from, MaxMessages: int(min(to-from, 1000))})
		if err != nil {
			return nil, fmt.Errorf("read %s/%d from %d: %w", tp.Topic, tp.Partition, from, err)
		}
		if len(res.Messages) == 0 {
			break
		}
		for _, m := range res.Messages {
			if m.Offset >= to {
				return out, nil
			}
			out = append(out, m)
		}
		from = res.NextOffset
	}
	return out, nil
}

func (cs *Consumer) position(tp Assignment) (int64, bool) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	p, ok := cs.pos[tp]
	return p, ok
}

func (cs *Consumer) setPosition(tp Assignment, p int64) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cur, ok := cs.pos[tp]; !ok || p > cur {
		cs.pos[tp] = p
	}
}

// processAll runs process on every batch, at most cfg.concurrency partitions at once, records
// the new positions as pending commits, and returns the first processor error.
func (cs *Consumer) processAll(ctx context.Context, batches []batch, process processor) error {
	type result struct {
		tp   Assignment
		next int64
		ok   bool
		err  error
	}
	results := make([]result, len(batches))
	sem := make(chan struct{}, cs.cfg.concurrency)
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			msgs := b.msgs
			if cs.initPos == nil { // a TxConsumer skips them inside its transaction
				msgs = cs.skipForeignReplays(b.msgs)
			}
			handled := int64(0)
			hasHandled := false
			if len(msgs) > 0 {
				handled, hasHandled, results[i].err = process(ctx, b.tp, msgs)
			}
			results[i].tp = b.tp
			// Replays skipped after the last handled message also move the position, but
			// only if everything before them was handled.
			last := b.msgs[len(b.msgs)-1].Offset + 1
			switch {
			case len(msgs) == 0:
				results[i].next, results[i].ok = last, true
			case hasHandled && handled == msgs[len(msgs)-1].Offset+1 && results[i].err == nil:
				results[i].next, results[i].ok = last, true
			default:
				results[i].next, results[i].ok = handled, hasHandled
			}
		}()
	}
	wg.Wait()
	var first error
	for _, r := range results {
		if r.ok {
			cs.setPosition(r.tp, r.next)
			cs.mu.Lock()
			if r.next > cs.pending[r.tp] {
				cs.pending[r.tp] = r.next
			}
			cs.mu.Unlock()
		}
		if r.err != nil && first == nil {
			first = r.err
		}
	}
	return first
}

// skipForeignReplays drops the replayed dead letters that another group dead-lettered: they
// are back on the topic for that group only. It keeps the order.
func (cs *Consumer) skipForeignReplays(msgs []FetchedMessage) []FetchedMessage {
	out := msgs[:0:0]
	for _, m := range msgs {
		if !cs.foreignReplay(m) {
			out = append(out, m)
		}
	}
	return out
}

// foreignReplay reports a replayed dead letter meant for another group.
func (cs *Consumer) foreignReplay(m FetchedMessage) bool {
	g, ok := m.Headers[HeaderReplayGroup]
	return ok && g != cs.group
}

// commit sends the pending offsets to the server. It runs also while stopping, so it does not
// use ctx's cancellation.
func (cs *Consumer) commit(ctx context.Context) {
	cs.mu.Lock()
	member := cs.memberID
	offsets := make([]GroupOffset, 0, len(cs.pending))
	for tp, off := range cs.pending {
		offsets = append(offsets, GroupOffset{Topic: tp.Topic, Partition: tp.Partition, Offset: off})
	}
	cs.mu.Unlock()
	if len(offsets) == 0 || member == "" {
		return
	}
	slices.SortFunc(offsets, func(a, b GroupOffset) int {
		return compareAssignments(Assignment{Topic: a.Topic, Partition: a.Partition}, Assignment{Topic: b.Topic, Partition: b.Partition})
	})
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	err := cs.c.CommitGroup(cctx, cs.group, member, offsets)
	switch {
	case err == nil:
		cs.committed(offsets)
	case isGone(err):
		cs.cfg.logger.Warn("commit refused: membership lost; the next owner starts at the committed offsets",
			"group", cs.group, "member", member, "err", err)
		cs.dropMembership()
	case IsCode(err, api.CodeNotPartitionOwner):
		// Commit partition by partition: keep what we still own, forget the rest.
		for _, o := range offsets {
			err := cs.c.CommitGroup(cctx, cs.group, member, []GroupOffset{o})
			switch {
			case err == nil:
				cs.committed([]GroupOffset{o})
			case IsCode(err, api.CodeNotPartitionOwner) || isGone(err):
				tp := Assignment{Topic: o.Topic, Partition: o.Partition}
				cs.mu.Lock()
				delete(cs.pending, tp)
				delete(cs.pos, tp)
				cs.mu.Unlock()
				delete(cs.assigned, tp)
				cs.cfg.logger.Info("partition lost before its commit; its new owner handles it again",
					"group", cs.group, "topic", o.Topic, "partition", o.Partition, "offset", o.Offset)
			default:
				cs.logCommitFailure(o, err)
			}
		}
	default:
		for _, o := range offsets {
			cs.logCommitFailure(o, err)
		}
	}
}

func (cs *Consumer) logCommitFailure(o GroupOffset, err error) {
	level := slog.LevelWarn
	if cs.bestEffort {
		level = slog.LevelDebug
	}
	cs.cfg.logger.Log(context.Background(), level, "commit failed; retried with the next commit",
		"group", cs.group, "topic", o.Topic, "partition", o.Partition, "offset", o.Offset, "err", err)
}

func (cs *Consumer) committed(offsets []GroupOffset) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, o := range offsets {
		tp := Assignment{Topic: o.Topic, Partition: o.Partition}
		if cs.pending[tp] == o.Offset {
			delete(cs.pending, tp)
		}
	}
}

// shutdown commits what was handled and leaves the group.
func (cs *Consumer) shutdown(ctx context.Context) {
	cs.commit(ctx)
	member := cs.MemberID()
	if member == "" {
		return
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := cs.c.LeaveGroup(lctx, cs.group, member); err != nil && !isGone(err) {
		cs.cfg.logger.Warn("leave failed; the server removes the member after its session timeout",
			"group", cs.group, "member", member, "err", err)
	} else {
		cs.cfg.logger.Info("left group", "group", cs.group, "member", member)
	}
	cs.mu.Lock()
	cs.memberID = ""
	cs.mu.Unlock()
}

// isGone reports an answer that means "this membership no longer exists".
func isGone(err error) bool {
	return IsCode(err, api.CodeUnknownMember) || IsCode(err, api.CodeUnknownGroup)
}

// permanent reports an answer that will not change by asking again (bad request, no right,
// unknown topic, conflicting mode): Run returns it.
func permanent(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	switch e.Status {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable, http.StatusRequestTimeout:
		return false
	}
	return e.Status >= 400 && e.Status < 500
}

// backoffDelay is the wait before retry n (1 for the first): base·2ⁿ⁻¹ capped at ceil, with
// ±25% jitter.
func backoffDelay(n int, base, ceil time.Duration) time.Duration {
	if base <= 0 {
		base = 100 * time.Millisecond
	}
	if ceil <= 0 {
		ceil = base
	}
	d := base << min(n-1, 20)
	if d > ceil || d <= 0 {
		d = ceil
	}
	jitter := time.Duration(rand.Int64N(int64(d)/2+1)) - d/4
	return max(d+jitter, time.Millisecond)
}

// sleepCtx waits d or until ctx ends; it reports whether the full wait passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
