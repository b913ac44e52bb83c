package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/imagomq/imago/internal/mysqlpool"
)

// mysqlStore is the MySQL/MariaDB side of a relay: one session that holds GET_LOCK and runs
// every query. It follows AUTO_INCREMENT ids and passes a gap only once it is final (see the
// package documentation).
type mysqlStore struct {
	o      *Options
	db     *sql.DB
	conn   *sql.Conn
	aux    *sql.DB // short-lived sessions of the gap check's sentinel transactions
	self   int64   // CONNECTION_ID() of conn
	dbName string  // DATABASE() of conn: the database of the state row
	mark   string
	inc    int64 // @@auto_increment_increment

	locked     bool  // conn holds lockName(dbName, source)
	legacyHeld int64 // the older relay's session last reported holding legacyLockName(source)

	wm  int64     // every id <= wm is final: committed rows are visible, missing ids never will be
	gap *gapCheck // the gap being checked, if any

	late  *lateRows // completed ranges to read again (mysql_late.go); the Relay's, begun at load
	epoch int64     // of the state row, as load read it

	// Statements prepared on conn, by their text. A statement with arguments otherwise costs
	// the driver a prepare, an execute and a close each time; prepared once, it runs in one
	// round trip. The steady loop (read, then complete: begin, remove, check, move the
	// cursor, read the total, commit) takes 7 round trips instead of 13.
	stmts map[string]*sql.Stmt
}

const mysqlStateTable = "imago_outbox_relay"

func openMySQL(ctx context.Context, o *Options) (*mysqlStore, error) {
	cfg, err := mysql.ParseDSN(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("outbox: source %s: MySQL DSN: %w", o.Name, err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("outbox: source %s: MySQL DSN: %w", o.Name, err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	aux := sql.OpenDB(conn)
	aux.SetMaxOpenConns(2)
	aux.SetMaxIdleConns(0) // every sentinel is a new session: its thread id is unique
	s := &mysqlStore{o: o, db: db, aux: aux, stmts: make(map[string]*sql.Stmt)}
	if o.Mode == ModeMark {
		s.mark = " AND relayed_at IS NULL"
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if s.conn, err = db.Conn(cctx); err != nil {
		db.Close()
		aux.Close()
		return nil, fmt.Errorf("outbox: source %s: connect to MySQL: %w", o.Name, err)
	}
	// The server ends the session, and with it GET_LOCK, after SessionTimeout without a
	// statement (a frozen or dead relay); net_*_timeout bound a statement stuck on the network.
	// READ COMMITTED: the completing transaction takes no gap locks, so its DELETE never
	// blocks the application's inserts. The session's other statements are autocommit reads,
	// which get a fresh read view each under either isolation level (the gap check relies on
	// that).
	secs := max(int64(o.SessionTimeout/time.Second), 1)
	if _, err := s.conn.ExecContext(ctx, `SET SESSION wait_timeout = ?, net_read_timeout = ?, net_write_timeout = ?`, secs, secs, secs); err != nil {
		s.close()
		return nil, fmt.Errorf("outbox: source %s: set session timeouts: %w", o.Name, err)
	}
	if _, err := s.conn.ExecContext(ctx, `SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED`); err != nil {
		s.close()
		return nil, fmt.Errorf("outbox: source %s: set the session's isolation level: %w", o.Name, err)
	}
	var dbName sql.NullString
	if err := s.conn.QueryRowContext(ctx, `SELECT @@auto_increment_increment, CONNECTION_ID(), DATABASE()`).Scan(&s.inc, &s.self, &dbName); err != nil {
		s.close()
		return nil, fmt.Errorf("outbox: source %s: read auto_increment_increment: %w", o.Name, err)
	}
	s.dbName = dbName.String
	if s.inc < 1 {
		s.inc = 1
	}
	return s, nil
}

func (s *mysqlStore) close() {
	s.dropGap()
	for _, st := range s.stmts {
		_ = st.Close()
	}
	_ = s.aux.Close()
	if s.conn != nil {
		_ = s.conn.Close()
	}
	_ = s.db.Close() // closes the session: GET_LOCK goes with it
}

// lockName is the GET_LOCK name of a source whose state row is in database db (the relay
// session's DATABASE(): the database of the DSN): "imago.outbox/<db>/<source>". GET_LOCK names
// are server-wide, and sources of one name in two databases of one server are two outboxes
// with two state rows: each needs a lock of its own. The outbox table is left out: the lock
// guards the source's state row, which two tables under one source name in one database
// would share. A name over 64 characters is hashed (mysqlpool.LockName).
func lockName(db, source string) string { return mysqlpool.LockName(lockPrefix, db+"/"+source) }

// legacyLockName is the lock name of relays before lockName had the database in it:
// "imago.outbox/<source>", or its hashed form. A relay takes it too, so that an older relay of
// the same outbox never runs beside it (tryLock).
func legacyLockName(source string) string { return mysqlpool.LockName(lockPrefix, source) }

const lockPrefix = "imago.outbox/"

// tryLock takes the source's lock, then checks the name older relays lock, which is
// server-wide: free, the relay takes it as well (an older relay of this outbox that starts
// later then waits for it); held by a session of this relay's database, it is an older relay
// of this outbox, and the relay waits, holding its own lock, until that one stops; held by a
// session of another database (or one this user cannot see: without PROCESS a user sees only
// its own sessions, and an older relay of this outbox would run as this user), it belongs to
// another outbox and the relay goes on without it.
func (s *mysqlStore) tryLock(ctx context.Context) (bool, error) {
	if !s.locked {
		var got sql.NullInt64
		if err := s.conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, lockName(s.dbName, s.o.Name)).Scan(&got); err != nil {
			return false, fmt.Errorf("outbox: GET_LOCK: %w", err)
		}
		if !got.Valid || got.Int64 != 1 {
			return false, nil
		}
		s.locked = true
	}
	legacy := legacyLockName(s.o.Name)
	var got, holder sql.NullInt64
	if err := s.conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0), IS_USED_LOCK(?)`, legacy, legacy).Scan(&got, &holder); err != nil {
		return false, fmt.Errorf("outbox: GET_LOCK: %w", err)
	}
	if got.Valid && got.Int64 == 1 {
		return true, nil
	}
	if !holder.Valid {
		return false, nil // released in between: take it at the next try
	}
	var holderDB sql.NullString
	err := s.conn.QueryRowContext(ctx, `SELECT DB FROM information_schema.PROCESSLIST WHERE ID = ?`, holder.Int64).Scan(&holderDB)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil // another user's session: another outbox's
	}
	if err != nil {
		return false, fmt.Errorf("outbox: find the session holding %s: %w", legacy, err)
	}
	if holderDB.String != s.dbName {
		return true, nil
	}
	if s.legacyHeld != holder.Int64 {
		s.legacyHeld = holder.Int64
		s.o.Logger.Warn("outbox relay waits: a session of this database holds the lock of relays of an earlier version: "+
			"an older relay of this source is running, and the two would not exclude each other; this relay takes over when it stops. "+
			"Stop the older relays of the source",
			"source", s.o.Name, "lock", legacy, "connection_id", holder.Int64)
	}
	return false, nil
}

func (s *mysqlStore) load(ctx context.Context) (state, error) {
	var st state
	if _, err := s.conn.ExecContext(ctx, `INSERT IGNORE INTO `+mysqlStateTable+` (source) VALUES (?)`, s.o.Name); err != nil {
		return st, fmt.Errorf("outbox: create state row (run the outbox migrations?): %w", err)
	}
	var claim sql.NullInt64
	var last sql.NullTime
	err := s.conn.QueryRowContext(ctx, `SELECT epoch, cursor_id, claim_id, relayed_total, last_relayed_at FROM `+mysqlStateTable+` WHERE source = ?`,
		s.o.Name).Scan(&st.epoch, &st.cursor.id, &claim, &st.total, &last)
	if err != nil {
		return st, fmt.Errorf("outbox: read state row: %w", err)
	}
	if claim.Valid {
		st.claim = &pos{id: claim.Int64}
	}
	if last.Valid {
		st.last = last.Time
	}
	s.wm, s.epoch = st.cursor.id, st.epoch
	s.dropGap()
	if s.late != nil {
		s.late.begin(st.cursor.id, st.epoch, time.Now()) // what an earlier process completed (mysql_late.go)
	}
	return st, nil
}

const mysqlCols = "id, topic, `key`, headers, payload, TIMESTAMPDIFF(MICROSECOND, created_at, NOW(6))"

// stmt returns q prepared on the relay's session, preparing it the first time.
func (s *mysqlStore) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st := s.stmts[q]; st != nil {
		return st, nil
	}
	st, err := s.conn.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	s.stmts[q] = st
	return st, nil
}

// exec runs q, prepared once, with args.
func (s *mysqlStore) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := s.stmt(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// idList is " IN (?, ...)" for ids, and its arguments. The list is padded to a power of two
// by repeating the last id (IN ignores the repeats), so that a few prepared statements serve
// every batch size (11 for the default BatchSize), unless the padding would pass the
// parameters one statement may bind (MaxMySQLBatchSize).
func idList(ids []int64) (string, []any) {
	n := 1
	for n < len(ids) {
		n *= 2
	}
	if n > MaxMySQLBatchSize {
		n = len(ids)
	}
	args := make([]any, n)
	for i := range args {
		args[i] = ids[min(i, len(ids)-1)]
	}
	return " IN (?" + strings.Repeat(",?", n-1) + ")", args
}

func (s *mysqlStore) query(ctx context.Context, q string, args ...any) ([]row, error) {
	st, err := s.stmt(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("outbox: select rows: %w", err)
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("outbox: select rows: %w", err)
	}
	defer rows.Close()
	var out []row
	now := time.Now()
	for rows.Next() {
		var rw row
		var key, headers sql.NullString
		var ageUS sql.NullInt64
		if err := rows.Scan(&rw.pos.id, &rw.msg.Topic, &key, &headers, &rw.msg.Payload, &ageUS); err != nil {
			return nil, fmt.Errorf("outbox: read row: %w", err)
		}
		rw.msg.Key = key.String
		if headers.Valid {
			if rw.msg.Headers, err = decodeHeaders(headers.String); err != nil {
				return nil, fmt.Errorf("outbox: row %d: %w", rw.pos.id, err)
			}
		}
		if rw.msg.Payload == nil {
			rw.msg.Payload = []byte{}
		}
		rw.size = encodedSize(&rw.msg)
		rw.age = time.Duration(max(ageUS.Int64, 0)) * time.Microsecond
		rw.readAt = now
		out = append(out, rw)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: read rows: %w", err)
	}
	return out, nil
}

func (s *mysqlStore) next(ctx context.Context, cur pos, limit int) ([]row, bool, error) {
	if err := s.checkLate(ctx, cur.id); err != nil {
		return nil, false, err
	}
	for attempt := 0; ; attempt++ {
		// Each autocommit SELECT gets a fresh read view.
		rows, err := s.query(ctx, `SELECT `+mysqlCols+` FROM `+s.o.Table+` WHERE id > ?`+s.mark+` ORDER BY id LIMIT ?`, cur.id, limit)
		if err != nil {
			return nil, false, err
		}
		prev, n := cur.id, 0
		for _, rw := range rows {
			if rw.pos.id <= s.wm || rw.pos.id <= prev+s.inc {
				prev = rw.pos.id
				n++
				continue
			}
			break
		}
		if n == len(rows) {
			s.dropGap() // nothing missing now: a check still pending is moot
			return rows, false, nil
		}
		// A gap below rows[n]: check it; rows[:n] are final already.
		advanced, err := s.checkGap(ctx, rows[len(rows)-1].pos.id)
		if err != nil {
			return nil, false, err
		}
		if advanced && attempt == 0 {
			continue // re-read with a fresh view: the watermark moved
		}
		return rows[:n], true, nil
	}
}

func (s *mysqlStore) claimed(ctx context.Context, cur, end pos) ([]row, error) {
	s.wm = max(s.wm, end.id)
	return s.query(ctx, `SELECT `+mysqlCols+` FROM `+s.o.Table+` WHERE id > ? AND id <= ?`+s.mark+` ORDER BY id`, cur.id, end.id)
}

func (s *mysqlStore) saveClaim(ctx context.Context, end pos) error {
	res, err := s.conn.ExecContext(ctx, `UPDATE `+mysqlStateTable+` SET claim_id = ?, updated_at = NOW(6) WHERE source = ?`, end.id, s.o.Name)
	if err != nil {
		return fmt.Errorf("outbox: record claim: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errors.New("outbox: record claim: the state row is gone")
	}
	return nil
}

// complete runs as one transaction on the relay's session (READ COMMITTED, set when the
// session opened), begun and ended by statements rather than database/sql's Tx, so that its
// statements are the ones prepared on the session. An error rolls it back; should the
// ROLLBACK fail too, the relay closes the session after the error and the server rolls back
// what is still open.
func (s *mysqlStore) complete(ctx context.Context, cur, end pos, batch []row, nextClaim *pos) (total int64, err error) {
	if _, err := s.conn.ExecContext(ctx, `START TRANSACTION`); err != nil {
		return 0, fmt.Errorf("outbox: complete batch: begin: %w", err)
	}
	defer func() {
		if err != nil {
			// Best effort: the session is closed after an error anyway.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			_, _ = s.conn.ExecContext(rctx, `ROLLBACK`)
		}
	}()
	if len(batch) > 0 {
		// Exactly the published ids: a row that landed inside (cur, end] unpublished stays.
		ids := make([]int64, len(batch))
		for i, rw := range batch {
			ids[i] = rw.pos.id
		}
		in, args := idList(ids)
		var res sql.Result
		if s.o.Mode == ModeMark {
			res, err = s.exec(ctx, `UPDATE `+s.o.Table+` SET relayed_at = NOW(6) WHERE id`+in+` AND relayed_at IS NULL`, args...)
		} else {
			res, err = s.exec(ctx, `DELETE FROM `+s.o.Table+` WHERE id`+in, args...)
		}
		if err != nil {
			return 0, fmt.Errorf("outbox: complete batch: remove rows: %w", err)
		}
		if k, _ := res.RowsAffected(); k != int64(len(batch)) {
			err = fmt.Errorf("%w: %w: source %s: batch (%d, %d] of %d rows: %d removed", ErrPermanent, ErrRowsChanged, s.o.Name, cur.id, end.id, len(batch), k)
			return 0, err
		}
	}
	// Anything left in the range was not published: stop, loudly, with the row in place.
	stray, err := s.strayIDs(ctx, cur.id, end.id)
	if err != nil {
		return 0, fmt.Errorf("outbox: complete batch: look for unpublished rows: %w", err)
	}
	if len(stray) > 0 {
		err = fmt.Errorf("%w: %w: source %s: ids %v committed inside batch (%d, %d] after it was read", ErrPermanent, ErrStrayRows, s.o.Name, stray, cur.id, end.id)
		return 0, err
	}
	var claim any
	if nextClaim != nil {
		claim = nextClaim.id
	}
	var res sql.Result
	res, err = s.exec(ctx, `UPDATE `+mysqlStateTable+` SET cursor_id = ?, claim_id = ?, relayed_total = relayed_total + ?,
		last_relayed_at = NOW(6), updated_at = NOW(6) WHERE source = ? AND cursor_id = ?`, end.id, claim, len(batch), s.o.Name, cur.id)
	if err != nil {
		return 0, fmt.Errorf("outbox: complete batch: move cursor: %w", err)
	}
	if k, _ := res.RowsAffected(); k != 1 {
		err = errors.New("outbox: complete batch: the state row moved: another relay wrote it")
		return 0, err
	}
	st, err := s.stmt(ctx, `SELECT relayed_total FROM `+mysqlStateTable+` WHERE source = ?`)
	if err != nil {
		return 0, fmt.Errorf("outbox: complete batch: read total: %w", err)
	}
	if err = st.QueryRowContext(ctx, s.o.Name).Scan(&total); err != nil {
		return 0, fmt.Errorf("outbox: complete batch: read total: %w", err)
	}
	if _, err = s.conn.ExecContext(ctx, `COMMIT`); err != nil {
		return 0, fmt.Errorf("outbox: complete batch: commit: %w", err)
	}
	if s.late != nil {
		if end.id-cur.id > int64(len(batch))*s.inc {
			s.late.add(cur.id, end.id, s.epoch, time.Now()) // ids missing: read the range again later (mysql_late.go)
		}
		s.late.completed(end.id, s.epoch)
	}
	if nextClaim != nil {
		s.wm = max(s.wm, nextClaim.id)
	}
	return total, nil
}

// strayIDs returns up to 20 ids of rows in (lo, hi] not yet relayed.
func (s *mysqlStore) strayIDs(ctx context.Context, lo, hi int64) ([]int64, error) {
	st, err := s.stmt(ctx, `SELECT id FROM `+s.o.Table+` WHERE id > ? AND id <= ?`+s.mark+` ORDER BY id LIMIT 20`)
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func (s *mysqlStore) ping(ctx context.Context) error { return s.conn.PingContext(ctx) }

func (s *mysqlStore) wait(ctx context.Context, d time.Duration) (bool, error) {
	return false, sleep(ctx, d)
}

func (s *mysqlStore) backlog(ctx context.Context, cur pos) (int64, error) {
	var n int64
	if err := s.conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+s.o.Table+` WHERE id > ?`+s.mark, cur.id).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox: count backlog: %w", err)
	}
	return n, nil
}
