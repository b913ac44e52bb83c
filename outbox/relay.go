package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// pos is a place in commit order: (txid, id) in PostgreSQL, id alone (txid 0) in MySQL.
type pos struct {
	txid uint64
	id   int64
}

func (p pos) after(q pos) bool { return p.txid > q.txid || (p.txid == q.txid && p.id > q.id) }

// row is one outbox row read by the relay.
type row struct {
	pos     pos
	msg     Message
	size    int           // encodedSize of msg
	age     time.Duration // created_at to the read, by the database clock
	readAt  time.Time
	headers []byte
}

// state is the source's row in the relay state table.
type state struct {
	epoch  int64 // part of the idempotency keys (see keyFor)
	cursor pos
	claim  *pos
	total  int64
	last   time.Time
}

// store is one dialect's access to the outbox, on one dedicated session that holds the lock.
type store interface {
	// tryLock takes the source's session lock without waiting.
	tryLock(ctx context.Context) (bool, error)
	// load returns the source's state, creating the row if needed.
	load(ctx context.Context) (state, error)
	// next returns up to limit rows after cur that are final (can no longer be preceded by a
	// row that commits later), in commit order; waiting reports rows that exist but are not yet final.
	next(ctx context.Context, cur pos, limit int) (rows []row, waiting bool, err error)
	// claimed returns the rows in (cur, end].
	claimed(ctx context.Context, cur, end pos) ([]row, error)
	// saveClaim records end as the batch in flight.
	saveClaim(ctx context.Context, end pos) error
	// complete removes (or marks) exactly the rows of batch, the published rows in (cur, end],
	// moves the cursor to end, and records nextClaim (nil: none), in one transaction; it
	// returns the state's new relayed_total. It fails with ErrRowsChanged when another number
	// of rows was removed, and with ErrStrayRows when (cur, end] holds a row batch does not
	// (both wrap ErrPermanent): then nothing is removed and the cursor stays.
	complete(ctx context.Context, cur, end pos, batch []row, nextClaim *pos) (int64, error)
	// wait blocks up to d, returning early (woken) when the database signals new rows.
	wait(ctx context.Context, d time.Duration) (woken bool, err error)
	// backlog counts rows after cur not yet relayed.
	backlog(ctx context.Context, cur pos) (int64, error)
	// ping runs a trivial statement, so the server does not end the idle session.
	ping(ctx context.Context) error
	close()
}

// Status is a source's state as reported by GET /v1/outbox/sources.
type Status struct {
	Name string
	// Active is true while this process holds the source's lock.
	Active bool
	// Backlog is the last sampled count of waiting rows (-1 when never sampled here).
	Backlog int64
	// RelayedTotal is relayed_total of the source's state row, as last seen.
	RelayedTotal int64
	// LastRelayedAt is when the last batch was published (zero: never).
	LastRelayedAt time.Time
	// Lag is the commit-to-publish delay of the last batch's oldest row.
	Lag time.Duration
	// LastError is the last failure, cleared by the next success.
	LastError string
}

// Relay drains one outbox source into the broker.
type Relay struct {
	opts Options
	pub  Publisher
	log  *slog.Logger
	open func(ctx context.Context) (store, error)

	mu     sync.Mutex
	status Status

	epoch int64 // of the state row, as loaded by the session relaying now
	high  pos   // the furthest cursor this process completed in epoch highEpoch
	highE int64

	cancel context.CancelFunc
	done   chan struct{}

	late lateRows // MySQL: completed ranges to read again for late rows (mysql_late.go)
}

// New returns a relay for one source; Run or Start it.
func New(opts Options, pub Publisher) (*Relay, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if pub == nil {
		return nil, errors.New("outbox: a relay needs a publisher")
	}
	r := &Relay{opts: opts, pub: pub, log: opts.Logger.With("source", opts.Name)}
	r.status = Status{Name: opts.Name, Backlog: -1}
	switch opts.Dialect {
	case Postgres:
		r.open = func(ctx context.Context) (store, error) { return openPG(ctx, &r.opts) }
	default:
		r.late.delays = opts.lateChecks
		if r.late.delays == nil {
			r.late.delays = defaultLateChecks
		}
		r.open = func(ctx context.Context) (store, error) {
			s, err := openMySQL(ctx, &r.opts)
			if err != nil {
				return nil, err
			}
			s.late = &r.late
			return s, nil
		}
	}
	return r, nil
}

// Name returns the source name.
func (r *Relay) Name() string { return r.opts.Name }

// Status returns a snapshot of the source's state.
func (r *Relay) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Start runs the relay in a goroutine until Close.
func (r *Relay) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.done = make(chan struct{})
	go func() {
		defer close(r.done)
		_ = r.Run(ctx)
	}()
}

// Close stops a relay started with Start and waits for it. A batch being published is
// abandoned; its claim makes the next relay republish it under the same keys.
func (r *Relay) Close() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	<-r.done
	return nil
}

// Run relays until ctx ends: it waits for the source's lock, relays while holding it, and
// reconnects after any database error. It returns ctx's error, or an ErrPermanent error.
func (r *Relay) Run(ctx context.Context) error {
	backoff := r.opts.MinPoll
	for {
		err := r.session(ctx)
		r.setActive(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrPermanent) {
			var tooBig *tooLargeError
			switch {
			case errors.Is(err, ErrKeyReused):
				r.log.Error("outbox relay stopped: the broker holds one of this source's idempotency keys with other messages: "+
					"the outbox's history went back (a failover or a restore) and rows were rebuilt under used ids. "+
					"To publish the rows after the cursor under a new epoch (rows published before the regression may be published again; none is lost), run the command, then restart the relay",
					"err", err, "command", epochSQL(r.opts.Dialect, r.opts.Name))
			case errors.Is(err, ErrSourceMoved):
				r.log.Error("outbox relay refuses to run: the cursor belongs to another database cluster (a restored dump or a replication cutover); "+
					"new rows would sort below it and never be relayed. Check that every row still in the outbox is unpublished, run the command "+
					"(it publishes every row in the outbox again, from the start, under a new epoch), then restart the relay",
					"err", err, "command", resetSQL(r.opts.Dialect, r.opts.Name))
			case errors.As(err, &tooBig):
				msg := "outbox relay stopped: a row is larger than the broker accepts; it stays in the outbox, and the rows after it wait. " +
					"The error says which limit refused it: the broker's on one message's key, headers and payload (message too large; 1 MiB in imago serve), " +
					"or over HTTP the gateway's max_body_bytes (payload_too_large). Raise that limit where you can, or take the row out with the command " +
					"(it is then never published: deliver it another way), then restart the relay"
				if len(tooBig.rows) > 1 {
					msg = "outbox relay stopped: a produce request of several rows is larger than the broker accepts; they stay in the outbox, and the rows after them wait. " +
						"Either the gateway's max_body_bytes is below the relay's batches (4 MiB; payload_too_large), or the batch was claimed by an earlier relay version, " +
						"which counted rows smaller and did not send large rows alone, and is published again as it was claimed. Raise the limit named in the error until " +
						"the relay has passed the batch, or, where a row is logged, it is over the broker's limit on one message: take it out with the command " +
						"(it is then never published: deliver it another way); then restart the relay"
				}
				args := []any{"err", err}
				if rw := tooBig.suspect(); rw != nil {
					args = append(args, "row", rw.pos.id, "command", removeRowSQL(r.opts.Dialect, r.opts.Table, r.opts.Mode, rw.pos.id))
				}
				r.log.Error(msg, args...)
			default:
				r.log.Error("outbox relay stopped: an operator must act (see docs/outbox.md)", "err", err)
			}
			r.setErr(err)
			return err
		}
		if err != nil {
			r.log.Warn("outbox relay: database session ended; reconnecting", "err", err, "in", backoff)
			r.setErr(err)
			r.count("db")
		}
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
		if err == nil {
			backoff = r.opts.MinPoll
		}
	}
}

// session opens a connection, waits for the lock on it and relays until an error.
func (r *Relay) session(ctx context.Context) error {
	st, err := r.open(ctx)
	if err != nil {
		return err
	}
	defer st.close()
	for {
		ok, err := st.tryLock(ctx)
		if err != nil {
			return err
		}
		if ok {
			break
		}
		if err := sleep(ctx, r.opts.LockRetry); err != nil {
			return err
		}
	}
	r.log.Info("outbox relay active: holding the source lock", "table", r.opts.Table, "mode", string(r.opts.Mode))
	r.setActive(true)
	return r.relay(ctx, st)
}

// relay is the claim, publish, complete loop (see the package documentation).
func (r *Relay) relay(ctx context.Context, st store) error {
	s, err := st.load(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.status.RelayedTotal, r.status.LastRelayedAt = s.total, s.last
	r.mu.Unlock()
	r.epoch = s.epoch
	if s.epoch == r.highE && r.high.after(s.cursor) {
		// This process completed batches past the stored cursor: the database went back (a
		// failover to a replica that had not received them, a restore). Batches rebuilt with
		// other rows under used ids will stop the relay (ErrKeyReused).
		r.log.Warn("outbox relay: the cursor moved back since this process last completed a batch (failover or restore?)",
			"cursor_id", s.cursor.id, "completed_id", r.high.id)
	}
	cur := s.cursor
	var batch []row
	if s.claim != nil && s.claim.after(cur) {
		if batch, err = st.claimed(ctx, cur, *s.claim); err != nil {
			return err
		}
		r.log.Info("outbox relay: republishing the batch claimed before a restart", "rows", len(batch))
		if len(batch) == 0 { // nothing left in the claim (cannot happen unless rows were removed by hand)
			if _, err := st.complete(ctx, cur, *s.claim, nil, nil); err != nil {
				return err
			}
			cur, batch = *s.claim, nil
		}
	}
	var lastBacklog, heldSince, lastRead time.Time
	idle := r.opts.MinPoll
	full := false // the batch in hand filled BatchSize or BatchBytes: read the next one at once
	read := true  // false: the last read (the one before completing) found nothing; wait first
	held := false // what that read found: rows not yet final (true) or none
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Since(lastBacklog) >= r.opts.BacklogEvery {
			lastBacklog = time.Now()
			if n, err := st.backlog(ctx, cur); err == nil {
				r.setBacklog(n)
			} else {
				return err
			}
		}
		if batch == nil {
			var rows []row
			if read {
				lastRead = time.Now()
				var err error
				if rows, held, err = st.next(ctx, cur, r.opts.BatchSize); err != nil {
					return err
				}
				r.countRead(len(rows), held)
			}
			read = true
			if len(rows) == 0 {
				// Nothing final to relay: rows not yet committed, or committed behind an older
				// transaction still open, or none. Writers do not signal (see "What the
				// PostgreSQL relay waits on" in the package documentation), so poll, soon after
				// activity and more rarely the longer the outbox stays quiet.
				d := idle
				idle = min(2*idle, r.opts.MaxPoll)
				if held && r.opts.Dialect == Postgres {
					// Committed rows wait for an older transaction, which usually ends within
					// milliseconds: poll at most heldPoll apart for the first heldFor, rather
					// than let the interval double past the moment they become final.
					if heldSince.IsZero() {
						heldSince = time.Now()
					}
					if time.Since(heldSince) < heldFor {
						d = min(d, max(heldPoll, r.opts.MinPoll))
					}
				} else {
					heldSince = time.Time{}
				}
				woken, err := st.wait(ctx, d)
				if err != nil {
					return err
				}
				if woken {
					idle = r.opts.MinPoll
				}
				continue
			}
			batch, full = r.cut(rows)
			if err := st.saveClaim(ctx, batch[len(batch)-1].pos); err != nil {
				return err
			}
		}
		idle, heldSince = r.opts.MinPoll, time.Time{}
		stop := keepAlive(st, r.opts.SessionTimeout/3)
		err := r.publish(ctx, batch)
		stop()
		if err != nil {
			return err
		}
		end := batch[len(batch)-1].pos
		// Pace the reads: a batch that was not full took every final row there was, so the
		// next read waits until MinPoll after this one, and gathers what committed meanwhile
		// into one batch (one read and one completing transaction for all of it, where
		// reading again at once would cost the database both for a row or two).
		if !full {
			if d := time.Until(lastRead.Add(r.opts.MinPoll)); d > 0 {
				if err := sleep(ctx, d); err != nil {
					return err
				}
			}
		}
		// Read the next batch before completing this one, so that its claim is recorded in
		// the same transaction.
		lastRead = time.Now()
		nextRows, nextHeld, err := st.next(ctx, end, r.opts.BatchSize)
		if err != nil {
			return err
		}
		r.countRead(len(nextRows), nextHeld)
		var nextClaim *pos
		if len(nextRows) > 0 {
			nextRows, full = r.cut(nextRows)
			p := nextRows[len(nextRows)-1].pos
			nextClaim = &p
		}
		total, err := st.complete(ctx, cur, end, batch, nextClaim)
		if err != nil {
			return err
		}
		r.done1(batch, total)
		cur = end
		r.high, r.highE = end, r.epoch
		batch = nil
		if len(nextRows) > 0 {
			batch = nextRows
		} else {
			// That read found nothing: the loop waits before reading again.
			read, held = false, nextHeld
		}
	}
}

// keepAlive pings st every d until stop is called: publishing may take longer than the
// session timeout (a broker that is down), and the session must outlive it. The session is
// not used otherwise meanwhile. A ping is never cancelled half-way (a cancelled statement can
// leave a pgx connection unusable); stop waits for the one in flight.
func keepAlive(st store, d time.Duration) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), d)
				_ = st.ping(ctx) // a dead session shows at the next real statement
				cancel()
			}
		}
	}()
	return func() { close(quit); <-done }
}

// cut trims rows to BatchBytes of their encoded size (at least one row), and puts a row above
// soloRawBytes in a batch of its own; full reports a batch that filled BatchSize or BatchBytes
// or was cut at such a row, after which more rows may be waiting.
func (r *Relay) cut(rows []row) (batch []row, full bool) {
	size := 0
	for i, rw := range rows {
		solo := rawSize(&rw.msg) > soloRawBytes
		if i > 0 && solo {
			return rows[:i], true
		}
		size += rw.size
		if size > r.opts.BatchBytes && i > 0 {
			return rows[:i], true
		}
		if solo && len(rows) > 1 {
			return rows[:1], true
		}
	}
	return rows, len(rows) >= r.opts.BatchSize
}

// publish sends the batch, one request per topic (topics in parallel, each in row order),
// retrying transient failures until it succeeds or ctx ends.
func (r *Relay) publish(ctx context.Context, batch []row) error {
	type group struct {
		topic string
		rows  []row
		msgs  []Message
	}
	var groups []*group
	byTopic := map[string]*group{}
	for _, rw := range batch {
		g := byTopic[rw.msg.Topic]
		if g == nil {
			g = &group{topic: rw.msg.Topic}
			byTopic[rw.msg.Topic] = g
			groups = append(groups, g)
		}
		g.rows = append(g.rows, rw)
		g.msgs = append(g.msgs, rw.msg)
	}
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := keyFor(r.opts.Name, r.epoch, g.rows[0].pos.id)
			errs[i] = r.publishOne(ctx, g.topic, g.rows, g.msgs, key)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// tooLargeError is a topic's group of a batch that the publisher refused for its size
// (ErrTooLarge): it names the rows, so that the operator can act on them.
type tooLargeError struct {
	topic, key string
	rows       []row
	err        error
}

func (e *tooLargeError) Error() string {
	if len(e.rows) == 1 {
		rw := &e.rows[0]
		return fmt.Sprintf("row %d of topic %s is too large to publish: %d bytes of key, headers and payload, %d in a produce request (key %s): %v",
			rw.pos.id, e.topic, rawSize(&rw.msg), requestFraming+rw.size, e.key, e.err)
	}
	size, big := requestFraming, &e.rows[0]
	for i := range e.rows {
		size += e.rows[i].size
		if e.rows[i].size > big.size {
			big = &e.rows[i]
		}
	}
	return fmt.Sprintf("publish %d rows to %s (first row %d, last %d, key %s): the request is too large: up to %d bytes; its largest row is %d, "+
		"with %d bytes of key, headers and payload: %v", len(e.rows), e.topic, e.rows[0].pos.id, e.rows[len(e.rows)-1].pos.id, e.key,
		size, big.pos.id, rawSize(&big.msg), e.err)
}

// suspect is the row that the publisher refuses in every request: the group's only row, or
// its largest row when that is above soloRawBytes (the broker's default limit on one message;
// the relay sends such a row alone, but a batch claimed by an earlier version may hold one).
// Nil: no row is too large by itself.
func (e *tooLargeError) suspect() *row {
	if len(e.rows) == 1 {
		return &e.rows[0]
	}
	var big *row
	for i := range e.rows {
		if n := rawSize(&e.rows[i].msg); n > soloRawBytes && (big == nil || n > rawSize(&big.msg)) {
			big = &e.rows[i]
		}
	}
	return big
}

func (e *tooLargeError) Unwrap() error { return e.err }

func (r *Relay) publishOne(ctx context.Context, topic string, rows []row, msgs []Message, key string) error {
	backoff := 50 * time.Millisecond
	for {
		err := r.pub.Publish(ctx, topic, msgs, key)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrPermanent) && errors.Is(err, ErrTooLarge) {
			return &tooLargeError{topic: topic, key: key, rows: rows, err: err}
		}
		if errors.Is(err, ErrPermanent) {
			return fmt.Errorf("publish %d rows to %s (key %s): %w", len(msgs), topic, key, err)
		}
		r.count("publish")
		r.setErr(err)
		r.log.Warn("outbox relay: publish failed; retrying the same batch", "topic", topic, "rows", len(msgs), "err", err, "in", backoff)
		if err := sleep(ctx, backoff); err != nil {
			return err
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (r *Relay) done1(batch []row, total int64) {
	now := time.Now()
	oldest := time.Duration(0)
	m := r.opts.Metrics
	for _, rw := range batch {
		lag := rw.age + now.Sub(rw.readAt)
		oldest = max(oldest, lag)
		if m != nil {
			m.lag.WithLabelValues(r.opts.Name).Observe(lag.Seconds())
		}
	}
	if m != nil {
		m.relayed.WithLabelValues(r.opts.Name).Add(float64(len(batch)))
		m.batches.WithLabelValues(r.opts.Name).Inc()
		m.lastTime.WithLabelValues(r.opts.Name).Set(float64(now.UnixNano()) / 1e9)
	}
	r.mu.Lock()
	r.status.RelayedTotal = total
	r.status.LastRelayedAt = now
	r.status.Lag = oldest
	r.status.LastError = ""
	r.mu.Unlock()
}

// countRead counts one read of the outbox that returned n rows (held: none final yet).
func (r *Relay) countRead(n int, held bool) {
	m := r.opts.Metrics
	if m == nil {
		return
	}
	result := "rows"
	switch {
	case n > 0:
	case held:
		result = "held"
	default:
		result = "empty"
	}
	m.reads.WithLabelValues(r.opts.Name, result).Inc()
}

func (r *Relay) setActive(on bool) {
	r.mu.Lock()
	r.status.Active = on
	r.mu.Unlock()
	if m := r.opts.Metrics; m != nil {
		v := 0.0
		if on {
			v = 1
		}
		m.active.WithLabelValues(r.opts.Name).Set(v)
	}
}

func (r *Relay) setBacklog(n int64) {
	r.mu.Lock()
	r.status.Backlog = n
	r.mu.Unlock()
	if m := r.opts.Metrics; m != nil {
		m.backlog.WithLabelValues(r.opts.Name).Set(float64(n))
	}
}

func (r *Relay) setErr(err error) {
	r.mu.Lock()
	r.status.LastError = err.Error()
	r.mu.Unlock()
}

func (r *Relay) count(stage string) {
	if m := r.opts.Metrics; m != nil {
		m.errors.WithLabelValues(r.opts.Name, stage).Inc()
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// keyFor is the idempotency key of a topic's group of a batch: "outbox:<source>:<first id>" in
// epoch 0, "outbox:<source>:e<epoch>:<first id>" after an operator started a new epoch.
func keyFor(source string, epoch, first int64) string {
	if epoch == 0 {
		return "outbox:" + source + ":" + strconv.FormatInt(first, 10)
	}
	return "outbox:" + source + ":e" + strconv.FormatInt(epoch, 10) + ":" + strconv.FormatInt(first, 10)
}

// lockKey derives the advisory lock key (PostgreSQL) of a source: FNV-1a 64 of its name.
func lockKey(name string) int64 {
	h := uint64(14695981039346656037)
	for _, c := range []byte("imago.outbox/" + name) {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return int64(h)
}
