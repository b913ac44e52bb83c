package outbox

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/go-sql-driver/mysql"
)

// mysqlStore is the MySQL/MariaDB side of a relay: one session that holds GET_LOCK and runs
// every query. It follows AUTO_INCREMENT ids and passes a gap only once it is final (see the
// package documentation).
type mysqlStore struct {
	o    *Options
	db   *sql.DB
	conn *sql.Conn
	mark string
	inc  int64 // @@auto_increment_increment

	wm  int64     // every id <= wm is final: committed rows are visible, missing ids never will be
	gap *gapCheck // the gap being checked, if any
}

// gapCheck follows one gap: seen at seenAt below id high; trx is the set of InnoDB transactions
// open GapCheckDelay later. Once all of them have ended, every id <= high is final.
type gapCheck struct {
	high      int64
	seenAt    time.Time
	trx       map[string]bool
	fallback  bool
	lastProbe time.Time
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
	s := &mysqlStore{o: o, db: db}
	if o.Mode == ModeMark {
		s.mark = " AND relayed_at IS NULL"
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if s.conn, err = db.Conn(cctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("outbox: source %s: connect to MySQL: %w", o.Name, err)
	}
	if err := s.conn.QueryRowContext(ctx, `SELECT @@auto_increment_increment`).Scan(&s.inc); err != nil {
		s.close()
		return nil, fmt.Errorf("outbox: source %s: read auto_increment_increment: %w", o.Name, err)
	}
	if s.inc < 1 {
		s.inc = 1
	}
	return s, nil
}

func (s *mysqlStore) close() {
	if s.conn != nil {
		_ = s.conn.Close()
	}
	_ = s.db.Close() // closes the session: GET_LOCK goes with it
}

// lockName is the GET_LOCK name of a source (at most 64 characters).
func lockName(source string) string {
	n := "imago.outbox/" + source
	if len(n) <= 64 {
		return n
	}
	h := sha256.Sum256([]byte(source))
	return "imago.outbox/" + hex.EncodeToString(h[:20])
}

func (s *mysqlStore) tryLock(ctx context.Context) (bool, error) {
	var got sql.NullInt64
	if err := s.conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 0)`, lockName(s.o.Name)).Scan(&got); err != nil {
		return false, fmt.Errorf("outbox: GET_LOCK: %w", err)
	}
	return got.Valid && got.Int64 == 1, nil
}

func (s *mysqlStore) load(ctx context.Context) (state, error) {
	var st state
	if _, err := s.conn.ExecContext(ctx, `INSERT IGNORE INTO `+mysqlStateTable+` (source) VALUES (?)`, s.o.Name); err != nil {
		return st, fmt.Errorf("outbox: create state row (run the outbox migrations?): %w", err)
	}
	var claim sql.NullInt64
	var last sql.NullTime
	err := s.conn.QueryRowContext(ctx, `SELECT cursor_id, claim_id, relayed_total, last_relayed_at FROM `+mysqlStateTable+` WHERE source = ?`,
		s.o.Name).Scan(&st.cursor.id, &claim, &st.total, &last)
	if err != nil {
		return st, fmt.Errorf("outbox: read state row: %w", err)
	}
	if claim.Valid {
		st.claim = &pos{id: claim.Int64}
	}
	if last.Valid {
		st.last = last.Time
	}
	s.wm = st.cursor.id
	s.gap = nil
	return st, nil
}

const mysqlCols = "id, topic, `key`, headers, payload, TIMESTAMPDIFF(MICROSECOND, created_at, NOW(6))"

func (s *mysqlStore) query(ctx context.Context, q string, args ...any) ([]row, error) {
	rows, err := s.conn.QueryContext(ctx, q, args...)
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
		rw.size = len(rw.msg.Payload) + len(rw.msg.Key) + 64
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

// checkGap advances the gap check for a gap below high; it reports whether the watermark moved.
func (s *mysqlStore) checkGap(ctx context.Context, high int64) (bool, error) {
	now := time.Now()
	g := s.gap
	if g == nil {
		// Every missing id below the highest committed id visible now can be settled by the
		// same check, not only those below this page of rows.
		var maxID sql.NullInt64
		if err := s.conn.QueryRowContext(ctx, `SELECT MAX(id) FROM `+s.o.Table).Scan(&maxID); err != nil {
			return false, fmt.Errorf("outbox: read the highest id: %w", err)
		}
		s.gap = &gapCheck{high: max(high, maxID.Int64), seenAt: now}
		return false, nil
	}
	switch {
	case g.fallback:
		if now.Sub(g.seenAt) < s.o.GapGrace {
			return false, nil
		}
	case g.trx == nil:
		if now.Sub(g.seenAt) < s.o.GapCheckDelay {
			return false, nil
		}
		open, err := s.openTrx(ctx)
		if err != nil {
			var me *mysql.MySQLError
			if errors.As(err, &me) && (me.Number == 1227 || me.Number == 1142) { // access denied
				s.o.Logger.Warn("outbox relay: cannot read information_schema.innodb_trx (grant PROCESS); passing id gaps after a grace period",
					"source", s.o.Name, "grace", s.o.GapGrace)
				g.fallback = true
				return false, nil
			}
			return false, err
		}
		g.trx, g.lastProbe = open, now
		if len(open) > 0 {
			return false, nil
		}
	default:
		if now.Sub(g.lastProbe) < 5*time.Millisecond {
			return false, nil
		}
		open, err := s.openTrx(ctx)
		if err != nil {
			return false, err
		}
		g.lastProbe = now
		for id := range g.trx {
			if open[id] {
				return false, nil
			}
		}
	}
	s.wm = max(s.wm, g.high)
	s.gap = nil
	return true, nil
}

// openTrx lists the InnoDB transactions open now, other than this session's.
func (s *mysqlStore) openTrx(ctx context.Context) (map[string]bool, error) {
	rows, err := s.conn.QueryContext(ctx, `SELECT trx_id FROM information_schema.innodb_trx WHERE trx_mysql_thread_id <> CONNECTION_ID()`)
	if err != nil {
		return nil, fmt.Errorf("outbox: read information_schema.innodb_trx: %w", err)
	}
	defer rows.Close()
	open := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("outbox: read innodb_trx: %w", err)
		}
		open[id] = true
	}
	return open, rows.Err()
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

func (s *mysqlStore) complete(ctx context.Context, cur, end pos, n int, nextClaim *pos) (total int64, err error) {
	// READ COMMITTED: no gap locks, so the DELETE never blocks the application's inserts.
	tx, err := s.conn.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, fmt.Errorf("outbox: complete batch: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if s.o.Mode == ModeMark {
		_, err = tx.ExecContext(ctx, `UPDATE `+s.o.Table+` SET relayed_at = NOW(6) WHERE id > ? AND id <= ? AND relayed_at IS NULL`, cur.id, end.id)
	} else {
		_, err = tx.ExecContext(ctx, `DELETE FROM `+s.o.Table+` WHERE id > ? AND id <= ?`, cur.id, end.id)
	}
	if err != nil {
		return 0, fmt.Errorf("outbox: complete batch: remove rows: %w", err)
	}
	var claim any
	if nextClaim != nil {
		claim = nextClaim.id
	}
	res, err := tx.ExecContext(ctx, `UPDATE `+mysqlStateTable+` SET cursor_id = ?, claim_id = ?, relayed_total = relayed_total + ?,
		last_relayed_at = NOW(6), updated_at = NOW(6) WHERE source = ? AND cursor_id = ?`, end.id, claim, n, s.o.Name, cur.id)
	if err != nil {
		return 0, fmt.Errorf("outbox: complete batch: move cursor: %w", err)
	}
	if k, _ := res.RowsAffected(); k != 1 {
		err = errors.New("outbox: complete batch: the state row moved: another relay wrote it")
		return 0, err
	}
	if err = tx.QueryRowContext(ctx, `SELECT relayed_total FROM `+mysqlStateTable+` WHERE source = ?`, s.o.Name).Scan(&total); err != nil {
		return 0, fmt.Errorf("outbox: complete batch: read total: %w", err)
	}
	if err = tx.Commit(); err != nil {
		return 0, fmt.Errorf("outbox: complete batch: commit: %w", err)
	}
	if nextClaim != nil {
		s.wm = max(s.wm, nextClaim.id)
	}
	return total, nil
}

func (s *mysqlStore) wait(ctx context.Context, d time.Duration) error { return sleep(ctx, d) }

func (s *mysqlStore) backlog(ctx context.Context, cur pos) (int64, error) {
	var n int64
	if err := s.conn.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+s.o.Table+` WHERE id > ?`+s.mark, cur.id).Scan(&n); err != nil {
		return 0, fmt.Errorf("outbox: count backlog: %w", err)
	}
	return n, nil
}
