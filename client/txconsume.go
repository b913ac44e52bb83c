package client

// Transactional consume: the handler's writes and the consumer's offset go to the
// application's own database in one transaction, so each message takes effect exactly once
// there.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/offsetdb"
)

// TxHandler processes one message inside tx, the database transaction that also records the
// message's offset. It must do its writes through tx (not through the *sql.DB) and must not
// commit or roll it back. An error rolls back everything the transaction did.
type TxHandler func(ctx context.Context, tx *sql.Tx, msg FetchedMessage) error

// PgxTxHandler is TxHandler for a pgx pool.
type PgxTxHandler func(ctx context.Context, tx pgx.Tx, msg FetchedMessage) error

// TxConsumer is a Consumer whose offsets live in the application's own database, written in
// the same transaction as the handler's writes: the side effects of a message and the fact
// that it was consumed are committed together or not at all. It processes each message into
// that database exactly once, through crashes, restarts and rebalances.
//
// # How it works
//
// For each polled batch of a partition the consumer begins a transaction, locks the
// partition's row of the offset table (imago.consumer_offsets in PostgreSQL,
// imago_consumer_offsets in MySQL/MariaDB; created if missing) with SELECT ... FOR UPDATE,
// checks that the stored offset is the batch's first offset, calls the handler for each
// message with the transaction, writes the new offset (offsetdb.CommitTx) and commits. The row
// lock fences the partition: a consumer that lost the partition in a rebalance but has not
// noticed yet waits for the lock, sees the offset moved and drops its stale batch, so two
// members never both apply a message. When a handler fails, the batch is rolled back and
// replayed one message per transaction, so that retries and the dead letter concern the
// failing message only. A message is dead-lettered inside a transaction of its own (with no
// handler writes) that first locks the offset row and checks the offset is still the
// message's, then stores the dead letter, then commits the offset: a member that lost the
// partition never dead-letters a message the new owner has applied.
//
// # Which offset counts
//
// The application's database is the source of truth. On start and whenever it gets a
// partition, the consumer reads the partition's offset from that database and ignores what the
// broker delivers below it; if the broker starts above it (its group offset is ahead of the
// database), the consumer reads the gap directly from the partition. A partition without a
// row starts where the broker starts the group (its group offset, else the partition's
// start): the row is created with the first offset delivered, and a first poll whose answer
// was lost is read again from there, as for a Consumer. An offset outside the partition stops
// Run with an error, for an operator to decide: below its start (retention deleted messages
// the consumer never applied), or past its end (the log lost messages the consumer applied, a
// data directory restored from a backup older than the database, and new messages take their
// offsets: skipping them would lose them). After each batch it
// also commits the offset to the group over HTTP, best effort, so that `imago groups
// describe`, GET /v1/groups/{group}/offsets and the lag metrics show it; that broker-side
// offset may lag the database after a crash (never lead it), which costs a re-delivery that
// the consumer skips, never a lost or doubled effect. Use a group name of its own for a
// transactional consumer, and reset its offsets in the application's database (UPDATE
// imago.consumer_offsets ...), not with `imago groups reset` against the broker's store.
//
// The offset table is created by Run (migrations.Apply, unless ConsumerMigrate(false); then run
// `imago migrate --dsn ...` once). The other options are those of Consumer.
type TxConsumer struct {
	cs    *Consumer
	store txStore
}

// NewTxConsumer returns a transactional consumer whose handler writes to db, a *sql.DB of
// dialect "postgres" (driver github.com/jackc/pgx/v5/stdlib) or "mysql" (MySQL or MariaDB,
// github.com/go-sql-driver/mysql). Use it with Run.
func NewTxConsumer(c *Client, group string, topics []string, db *sql.DB, dialect string, opts ...ConsumerOption) *TxConsumer {
	if d, ok := migrations.Dialect(dialect); ok {
		dialect = d
	}
	return newTxConsumer(c, group, topics, &sqlTxStore{db: db, dialect: dialect}, opts)
}

// NewPgxTxConsumer returns a transactional consumer whose handler writes to a PostgreSQL
// database through pool. Use it with RunPgx.
func NewPgxTxConsumer(c *Client, group string, topics []string, pool *pgxpool.Pool, opts ...ConsumerOption) *TxConsumer {
	return newTxConsumer(c, group, topics, &pgxTxStore{pool: pool}, opts)
}

func newTxConsumer(c *Client, group string, topics []string, store txStore, opts []ConsumerOption) *TxConsumer {
	cs := NewConsumer(c, group, topics, opts...)
	cs.fillGaps = true
	cs.bestEffort = true
	tc := &TxConsumer{cs: cs, store: store}
	cs.initPos = func(ctx context.Context, tp Assignment) (int64, bool, error) {
		next, ok, err := store.read(ctx, group, tp.Topic, tp.Partition)
		if err != nil || !ok {
			return next, ok, err
		}
		if err := tc.checkNotPastEnd(ctx, tp, next); err != nil {
			return 0, false, err
		}
		return next, true, nil
	}
	return tc
}

// pastEndError: the offset a transactional consumer's database holds for a partition lies
// past the partition's end. Run stops with it.
type pastEndError struct {
	tp          Assignment
	stored, end int64
}

func (e *pastEndError) Error() string {
	return fmt.Sprintf("transactional consumer: %s/%d: offset %d stored in the database is past the partition's end %d: "+
		"the log lacks messages this consumer applied (a broker data directory restored from a backup older than the database, "+
		"or the topic created again), and new messages take their offsets, which the consumer would skip; "+
		"move the stored offset once they are accounted for", e.tp.Topic, e.tp.Partition, e.stored, e.end)
}

// checkNotPastEnd makes sure the partition reaches stored, the offset the database holds for
// it. A log always holds what a consumer applied from it, so an offset past its end means
// the log lost messages (a restored data directory, a topic created again), and the
// messages produced since took their offsets: dropping what is below the stored offset would
// skip them silently and for good. Which ones were applied, only an operator can tell: Run
// stops with the *pastEndError (the consumer's loop returns it). An offset below the partition's
// start is not reported here: the first batch reports it (positionGoneError).
func (tc *TxConsumer) checkNotPastEnd(ctx context.Context, tp Assignment, stored int64) error {
	_, err := tc.cs.c.Fetch(ctx, tp.Topic, tp.Partition, FetchOptions{Offset: stored, MaxMessages: 1, MaxBytes: 1})
	var e *Error
	if !errors.As(err, &e) || e.Code != api.CodeOffsetOutOfRange {
		return err // nil, or a failure to retry
	}
	switch {
	case e.StartOffset != nil && stored < *e.StartOffset:
		return nil // below the start
	case e.EndOffset == nil || stored <= *e.EndOffset:
		return err // a range it does not say: ask again
	}
	return &pastEndError{tp: tp, stored: stored, end: *e.EndOffset}
}

// MemberID returns the member id of the current membership ("" when not joined).
func (tc *TxConsumer) MemberID() string { return tc.cs.MemberID() }

// Run consumes with h until ctx ends or a permanent error, like Consumer.Run. The consumer must
// have been made by NewTxConsumer.
func (tc *TxConsumer) Run(ctx context.Context, h TxHandler) error {
	s, ok := tc.store.(*sqlTxStore)
	if !ok || h == nil {
		return errors.New("client: TxConsumer.Run needs NewTxConsumer and a handler (use RunPgx with NewPgxTxConsumer)")
	}
	s.h = h
	return tc.run(ctx)
}

// RunPgx consumes with h until ctx ends or a permanent error, like Consumer.Run. The consumer
// must have been made by NewPgxTxConsumer.
func (tc *TxConsumer) RunPgx(ctx context.Context, h PgxTxHandler) error {
	s, ok := tc.store.(*pgxTxStore)
	if !ok || h == nil {
		return errors.New("client: TxConsumer.RunPgx needs NewPgxTxConsumer and a handler (use Run with NewTxConsumer)")
	}
	s.h = h
	return tc.run(ctx)
}

func (tc *TxConsumer) run(ctx context.Context) error {
	if tc.cs.cfg.migrate {
		if err := tc.store.migrate(ctx); err != nil {
			return fmt.Errorf("transactional consumer: %w", err)
		}
	}
	return tc.cs.loop(ctx, tc.process)
}

// errMoved means the stored offset is not where the batch starts: someone else (a previous
// owner, a crash's committed transaction) moved it. The batch is re-aligned and tried again.
type errMoved struct{ stored int64 }

func (e *errMoved) Error() string { return fmt.Sprintf("stored offset is %d", e.stored) }

// process handles one partition's batch (see the TxConsumer doc).
func (tc *TxConsumer) process(ctx context.Context, tp Assignment, msgs []FetchedMessage) (int64, bool, error) {
	next, done := int64(0), false
	infra := 0 // consecutive database failures outside the handler
	for len(msgs) > 0 && ctx.Err() == nil {
		err := tc.applyBatch(ctx, tp, msgs, nil)
		var moved *errMoved
		var herr *handlerFailure
		switch {
		case err == nil:
			return msgs[len(msgs)-1].Offset + 1, true, nil
		case errors.As(err, &moved):
			var aerr error
			msgs, aerr = tc.realign(ctx, tp, msgs, moved.stored)
			if aerr != nil {
				return next, done, aerr
			}
			if moved.stored > next || !done {
				next, done = moved.stored, true
			}
			tc.cs.setPosition(tp, moved.stored)
		case errors.As(err, &herr):
			// One message per transaction from here, with retries and the dead letter.
			n, ok, err := tc.oneByOne(ctx, tp, msgs)
			if ok {
				next, done = n, true
			}
			return next, done, err
		default:
			infra++
			tc.cs.cfg.logger.Warn("transactional batch failed; retrying", "group", tc.cs.group, "topic", tp.Topic,
				"partition", tp.Partition, "offset", msgs[0].Offset, "err", err)
			if !sleepCtx(ctx, backoffDelay(infra, 50*time.Millisecond, 5*time.Second)) {
				return next, done, nil
			}
		}
	}
	return next, done, nil
}

// realign drops the messages below stored, or reads the ones missing between stored and the
// batch, and returns the batch starting at stored.
func (tc *TxConsumer) realign(ctx context.Context, tp Assignment, msgs []FetchedMessage, stored int64) ([]FetchedMessage, error) {
	if stored > msgs[0].Offset {
		return fromOffset(msgs, stored), nil
	}
	gap, err := tc.cs.fetchRange(ctx, tp, stored, msgs[0].Offset)
	if err != nil {
		return nil, err
	}
	if len(gap) == 0 || gap[0].Offset != stored {
		return nil, fmt.Errorf("transactional consumer: %s/%d: offset %d stored in the database is no longer in the topic", tp.Topic, tp.Partition, stored)
	}
	return append(gap, msgs...), nil
}

// handlerFailure is a handler error inside applyBatch (as opposed to a database failure).
type handlerFailure struct {
	msg FetchedMessage
	err error
}

func (e *handlerFailure) Error() string { return e.err.Error() }
func (e *handlerFailure) Unwrap() error { return e.err }

// applyBatch runs one transaction: lock the offset row, check it equals msgs[0].Offset, call
// the handler for each message (none when skipHandler: a dead letter's commit), write the
// offset after the last message, commit. On any error the transaction is rolled back.
func (tc *TxConsumer) applyBatch(ctx context.Context, tp Assignment, msgs []FetchedMessage, skipHandler func(FetchedMessage) bool) error {
	tx, err := tc.store.begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tx.rollback()
		}
	}()
	first := msgs[0].Offset
	stored, err := tx.lock(ctx, tc.cs.group, tp.Topic, tp.Partition, first, tc.committedBy())
	if err != nil {
		return fmt.Errorf("lock offset row: %w", err)
	}
	if stored != first {
		return &errMoved{stored: stored}
	}
	for _, m := range msgs {
		if (skipHandler != nil && skipHandler(m)) || tc.cs.foreignReplay(m) {
			continue
		}
		if err := tx.handle(ctx, m); err != nil {
			return &handlerFailure{msg: m, err: err}
		}
	}
	last := msgs[len(msgs)-1].Offset
	o := offsetdb.Offset{Group: tc.cs.group, Topic: tp.Topic, Partition: tp.Partition, Next: last + 1, CommittedBy: tc.committedBy()}
	if err := tx.commitOffset(ctx, o); err != nil {
		return err
	}
	ok = true // commit or rollback, the transaction is over
	if err := tx.commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err) // outcome unknown: the next lock tells
	}
	return nil
}

func (tc *TxConsumer) committedBy() string {
	if id := tc.cs.cfg.consumerID; id != "" {
		return id
	}
	return tc.cs.MemberID()
}

// oneByOne handles msgs one transaction each: a failing message is retried with backoff and
// then dead-lettered (its offset committed in a transaction without handler writes).
func (tc *TxConsumer) oneByOne(ctx context.Context, tp Assignment, msgs []FetchedMessage) (int64, bool, error) {
	next, done := int64(0), false
	rec := tc.cs.rec
	for i := 0; i < len(msgs); i++ {
		m := msgs[i]
		var infraErr error
		n, err := rec.retry(ctx, m, func(ctx context.Context) error {
			infraErr = nil
			err := tc.applyBatch(ctx, tp, []FetchedMessage{m}, nil)
			var herr *handlerFailure
			var moved *errMoved
			switch {
			case err == nil, errors.As(err, &moved):
				infraErr = err
				return nil
			case errors.As(err, &herr):
				return herr.err
			default:
				infraErr = err
				return nil
			}
		})
		if ctx.Err() != nil {
			return next, done, nil
		}
		var moved *errMoved
		switch {
		case err == nil && infraErr == nil:
			next, done = m.Offset+1, true
			continue
		case err == nil && errors.As(infraErr, &moved):
			// Someone else moved the offset: re-align and go on from there.
			rest, aerr := tc.realign(ctx, tp, msgs[i:], moved.stored)
			if aerr != nil {
				return next, done, aerr
			}
			next, done = moved.stored, true
			msgs, i = rest, -1
			continue
		case err == nil:
			// A database failure outside the handler: wait and try the message again.
			tc.cs.cfg.logger.Warn("transactional commit failed; retrying", "group", tc.cs.group, "topic", tp.Topic,
				"partition", tp.Partition, "offset", m.Offset, "err", infraErr)
			if !sleepCtx(ctx, 200*time.Millisecond) {
				return next, done, nil
			}
			i--
			continue
		}
		// The handler failed n times. A database that does not answer is not the message's
		// fault: wait for it rather than dead-letter messages while it is down.
		if perr := tc.store.ping(ctx); perr != nil {
			tc.cs.cfg.logger.Warn("database unreachable; retrying the message", "err", perr)
			if !sleepCtx(ctx, time.Second) {
				return next, done, nil
			}
			i--
			continue
		}
		if !rec.deadLetter {
			return next, done, &HandlerError{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Attempts: n, Err: err}
		}
		// Dead-letter under the offset row's lock, after checking that the offset is still
		// this message's: a member that lost the partition must not dead-letter a message the
		// new owner applied (a replay of that dead letter would apply it twice).
		for {
			derr := tc.deadLetter(ctx, tp, m, err, n)
			if derr == nil {
				next, done = m.Offset+1, true
				break
			}
			if ctx.Err() != nil {
				return next, done, nil
			}
			var herr *HandlerError
			if errors.As(derr, &herr) {
				return next, done, derr
			}
			if errors.As(derr, &moved) {
				rest, aerr := tc.realign(ctx, tp, msgs[i:], moved.stored)
				if aerr != nil {
					return next, done, aerr
				}
				next, done = moved.stored, true
				msgs, i = rest, -1
				break
			}
			tc.cs.cfg.logger.Warn("dead-letter commit failed; retrying", "group", tc.cs.group, "topic", tp.Topic,
				"partition", tp.Partition, "offset", m.Offset, "err", derr)
			if !sleepCtx(ctx, 200*time.Millisecond) {
				return next, done, nil
			}
		}
	}
	return next, done, nil
}

// deadLetter stores m's dead letter and commits its offset in one transaction that holds the
// offset row's lock from before the dead letter is sent: *errMoved when the stored offset is
// no longer m's (another member handled it), a *HandlerError when the dead letter cannot be
// stored, any other error for the database (the caller retries; a dead letter sent twice is
// stored once, see DeadLetterKey).
func (tc *TxConsumer) deadLetter(ctx context.Context, tp Assignment, m FetchedMessage, cause error, attempts int) error {
	tx, err := tc.store.begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tx.rollback()
		}
	}()
	stored, err := tx.lock(ctx, tc.cs.group, tp.Topic, tp.Partition, m.Offset, tc.committedBy())
	if err != nil {
		return fmt.Errorf("lock offset row: %w", err)
	}
	if stored != m.Offset {
		return &errMoved{stored: stored}
	}
	if err := tc.cs.rec.toDLQ(ctx, m, cause, attempts); err != nil {
		return err
	}
	o := offsetdb.Offset{Group: tc.cs.group, Topic: tp.Topic, Partition: tp.Partition, Next: m.Offset + 1, CommittedBy: tc.committedBy()}
	if err := tx.commitOffset(ctx, o); err != nil {
		return err
	}
	ok = true
	if err := tx.commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// txStore is the database side of a TxConsumer: database/sql or pgx.
type txStore interface {
	migrate(ctx context.Context) error
	read(ctx context.Context, group, topic string, partition int) (int64, bool, error)
	begin(ctx context.Context) (txHandle, error)
	ping(ctx context.Context) error
}

// txHandle is one open transaction.
type txHandle interface {
	// lock makes sure the offset row exists (with seed when missing), locks it and returns the
	// stored offset.
	lock(ctx context.Context, group, topic string, partition int, seed int64, by string) (int64, error)
	handle(ctx context.Context, msg FetchedMessage) error
	commitOffset(ctx context.Context, o offsetdb.Offset) error
	commit(ctx context.Context) error
	rollback()
}

// SQL of the offset row, per dialect. The seed insert changes nothing when the row exists.
const (
	pgSeed = `INSERT INTO imago.consumer_offsets (group_name, topic, partition, next_offset, committed_by)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_name, topic, partition) DO NOTHING`
	pgLock = `SELECT next_offset FROM imago.consumer_offsets
WHERE group_name = $1 AND topic = $2 AND partition = $3 FOR UPDATE`
	pgRead = `SELECT next_offset FROM imago.consumer_offsets
WHERE group_name = $1 AND topic = $2 AND partition = $3`
	mysqlSeed = "INSERT INTO imago_consumer_offsets (group_name, topic, `partition`, next_offset, committed_at, committed_by)" +
		" VALUES (?, ?, ?, ?, UTC_TIMESTAMP(6), ?) ON DUPLICATE KEY UPDATE next_offset = next_offset"
	mysqlLock = "SELECT next_offset FROM imago_consumer_offsets WHERE group_name = ? AND topic = ? AND `partition` = ? FOR UPDATE"
	mysqlRead = "SELECT next_offset FROM imago_consumer_offsets WHERE group_name = ? AND topic = ? AND `partition` = ?"
)

// sqlTxStore is a database/sql database (PostgreSQL through pgx's stdlib, or MySQL/MariaDB).
type sqlTxStore struct {
	db      *sql.DB
	dialect string
	h       TxHandler
}

func (s *sqlTxStore) migrate(ctx context.Context) error {
	return migrations.Apply(ctx, s.db, s.dialect)
}

func (s *sqlTxStore) ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func (s *sqlTxStore) sql() (seed, lock, read string, err error) {
	switch s.dialect {
	case migrations.Postgres:
		return pgSeed, pgLock, pgRead, nil
	case migrations.MySQL:
		return mysqlSeed, mysqlLock, mysqlRead, nil
	}
	return "", "", "", fmt.Errorf("dialect %q: want postgres or mysql", s.dialect)
}

func (s *sqlTxStore) read(ctx context.Context, group, topic string, partition int) (int64, bool, error) {
	_, _, q, err := s.sql()
	if err != nil {
		return 0, false, err
	}
	return scanOffset(s.db.QueryRowContext(ctx, q, group, topic, partition), group, topic, partition)
}

// scanOffset reads the next_offset of one offset row (database/sql or pgx); ok is false when
// there is no row.
func scanOffset(row interface{ Scan(...any) error }, group, topic string, partition int) (next int64, ok bool, err error) {
	err = row.Scan(&next)
	if errors.Is(err, sql.ErrNoRows) || errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read offset of %s/%s/%d: %w", group, topic, partition, err)
	}
	return next, true, nil
}

func (s *sqlTxStore) begin(ctx context.Context) (txHandle, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &sqlTx{s: s, tx: tx}, nil
}

type sqlTx struct {
	s  *sqlTxStore
	tx *sql.Tx
}

func (t *sqlTx) lock(ctx context.Context, group, topic string, partition int, seed int64, by string) (int64, error) {
	seedQ, lockQ, _, err := t.s.sql()
	if err != nil {
		return 0, err
	}
	if _, err := t.tx.ExecContext(ctx, seedQ, group, topic, partition, seed, by); err != nil {
		return 0, err
	}
	var n int64
	err = t.tx.QueryRowContext(ctx, lockQ, group, topic, partition).Scan(&n)
	return n, err
}

func (t *sqlTx) handle(ctx context.Context, m FetchedMessage) error { return t.s.h(ctx, t.tx, m) }

func (t *sqlTx) commitOffset(ctx context.Context, o offsetdb.Offset) error {
	return offsetdb.CommitTx(ctx, t.tx, t.s.dialect, []offsetdb.Offset{o})
}

func (t *sqlTx) commit(context.Context) error { return t.tx.Commit() }
func (t *sqlTx) rollback()                    { _ = t.tx.Rollback() }

// pgxTxStore is a pgx pool.
type pgxTxStore struct {
	pool *pgxpool.Pool
	h    PgxTxHandler
}

func (s *pgxTxStore) migrate(ctx context.Context) error {
	db := stdlib.OpenDBFromPool(s.pool)
	defer db.Close()
	return migrations.Apply(ctx, db, migrations.Postgres)
}

func (s *pgxTxStore) ping(ctx context.Context) error { return s.pool.Ping(ctx) }

func (s *pgxTxStore) read(ctx context.Context, group, topic string, partition int) (int64, bool, error) {
	return scanOffset(s.pool.QueryRow(ctx, pgRead, group, topic, partition), group, topic, partition)
}

func (s *pgxTxStore) begin(ctx context.Context) (txHandle, error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, err
	}
	return &pgxTx{s: s, tx: tx}, nil
}

type pgxTx struct {
	s  *pgxTxStore
	tx pgx.Tx
}

func (t *pgxTx) lock(ctx context.Context, group, topic string, partition int, seed int64, by string) (int64, error) {
	if _, err := t.tx.Exec(ctx, pgSeed, group, topic, partition, seed, by); err != nil {
		return 0, err
	}
	var n int64
	err := t.tx.QueryRow(ctx, pgLock, group, topic, partition).Scan(&n)
	return n, err
}

func (t *pgxTx) handle(ctx context.Context, m FetchedMessage) error { return t.s.h(ctx, t.tx, m) }

func (t *pgxTx) commitOffset(ctx context.Context, o offsetdb.Offset) error {
	return offsetdb.CommitPgxTx(ctx, t.tx, []offsetdb.Offset{o})
}

func (t *pgxTx) commit(ctx context.Context) error { return t.tx.Commit(ctx) }

func (t *pgxTx) rollback() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = t.tx.Rollback(ctx)
}
