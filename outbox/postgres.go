package outbox

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgStore is the PostgreSQL side of a relay: one pgx connection that holds the advisory lock,
// LISTENs on imago_outbox and runs every query.
type pgStore struct {
	o      *Options
	conn   *pgx.Conn
	woken  atomic.Bool
	mark   string // extra condition in mark mode
	selCol string
}

const pgStateTable = "imago.outbox_relay"

func openPG(ctx context.Context, o *Options) (*pgStore, error) {
	cfg, err := pgx.ParseConfig(o.DSN)
	if err != nil {
		// The parse error quotes the DSN, and masks the password only in the forms the driver
		// recognises: do not wrap it.
		return nil, fmt.Errorf("outbox: source %s: cannot parse the PostgreSQL DSN", o.Name)
	}
	s := &pgStore{o: o}
	cfg.OnNotification = func(*pgconn.PgConn, *pgconn.Notification) { s.woken.Store(true) }
	cfg.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("outbox: source %s: connect to PostgreSQL: %w", o.Name, err)
	}
	s.conn = conn
	// The server ends the session, and with it the advisory lock, after SessionTimeout without
	// a statement (a frozen or dead relay; idle_session_timeout needs PostgreSQL 14); its TCP
	// keepalives and tcp_user_timeout drop a dead host's connection sooner.
	ms := strconv.FormatInt(o.SessionTimeout.Milliseconds(), 10)
	for _, kv := range [][2]string{
		{"idle_session_timeout", ms}, {"idle_in_transaction_session_timeout", ms}, {"tcp_user_timeout", ms},
		{"tcp_keepalives_idle", "5"}, {"tcp_keepalives_interval", "2"}, {"tcp_keepalives_count", "3"},
		// Every query of the relay reads a short range of the (txid, id) index or a few ids;
		// without statistics (a queue table's change outruns ANALYZE) PostgreSQL planned the
		// backlog count as a parallel scan, two worker processes started for a few rows.
		{"max_parallel_workers_per_gather", "0"},
	} {
		if _, err := conn.Exec(ctx, `SELECT set_config($1, $2, false)`, kv[0], kv[1]); err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) { // an older server (42704) or a platform without the socket option
				o.Logger.Warn("outbox relay: the server refused a session timeout; a frozen relay may keep the lock longer",
					"source", o.Name, "parameter", kv[0], "err", err)
				continue
			}
			s.close()
			return nil, fmt.Errorf("outbox: source %s: set %s: %w", o.Name, kv[0], err)
		}
	}
	if o.Mode == ModeMark {
		s.mark = " AND relayed_at IS NULL"
	}
	// txid is read as text under another name: a select-list column named txid would be what
	// ORDER BY txid sorts by, as text, and "1000" sorts before "999".
	s.selCol = `id, txid::text AS txid_text, topic, key, headers::text, payload, EXTRACT(EPOCH FROM clock_timestamp() - created_at)::float8`
	if _, err := conn.Exec(ctx, `LISTEN imago_outbox`); err != nil {
		s.close()
		return nil, fmt.Errorf("outbox: source %s: LISTEN: %w", o.Name, err)
	}
	return s, nil
}

func (s *pgStore) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.conn.Close(ctx) // ends the session: the advisory lock goes with it
}

func (s *pgStore) tryLock(ctx context.Context) (bool, error) {
	var ok bool
	if err := s.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, lockKey(s.o.Name)).Scan(&ok); err != nil {
		return false, fmt.Errorf("outbox: pg_try_advisory_lock: %w", err)
	}
	return ok, nil
}

func (s *pgStore) load(ctx context.Context) (state, error) {
	var st state
	if _, err := s.conn.Exec(ctx, `INSERT INTO `+pgStateTable+` (source) VALUES ($1) ON CONFLICT (source) DO NOTHING`, s.o.Name); err != nil {
		return st, fmt.Errorf("outbox: create state row (run the outbox migrations?): %w", err)
	}
	var cx string
	var ctxid, cid *int64
	var claimTx, sysid *string
	var last *time.Time
	var here string
	var xmax uint64
	err := s.conn.QueryRow(ctx, `SELECT epoch, system_id, cursor_txid::text, cursor_id, claim_txid::text, claim_id, relayed_total, last_relayed_at,
			(SELECT system_identifier::text FROM pg_control_system()), pg_snapshot_xmax(pg_current_snapshot())::text::bigint
		FROM `+pgStateTable+` WHERE source = $1`, s.o.Name).Scan(&st.epoch, &sysid, &cx, &ctxid, &claimTx, &cid, &st.total, &last, &here, &xmax)
	if err != nil {
		return st, fmt.Errorf("outbox: read state row: %w", err)
	}
	if st.cursor.txid, err = strconv.ParseUint(cx, 10, 64); err != nil {
		return st, fmt.Errorf("outbox: state cursor_txid %q: %w", cx, err)
	}
	st.cursor.id = *ctxid
	if claimTx != nil && cid != nil {
		t, err := strconv.ParseUint(*claimTx, 10, 64)
		if err != nil {
			return st, fmt.Errorf("outbox: state claim_txid %q: %w", *claimTx, err)
		}
		st.claim = &pos{txid: t, id: *cid}
	}
	if last != nil {
		st.last = *last
	}
	// The cursor's transaction ids mean something only in the cluster that handed them out: a
	// restored dump or a logical replication cutover starts another count, below the cursor.
	if sysid != nil && *sysid != here {
		return st, fmt.Errorf("%w: %w: source %s: the cursor was recorded in cluster %s, this is cluster %s", ErrPermanent, ErrSourceMoved, s.o.Name, *sysid, here)
	}
	if st.cursor.txid >= xmax && st.cursor.txid > 0 {
		return st, fmt.Errorf("%w: %w: source %s: the cursor's transaction id %d is beyond any this cluster has handed out (%d)", ErrPermanent, ErrSourceMoved, s.o.Name, st.cursor.txid, xmax)
	}
	if sysid == nil {
		if _, err := s.conn.Exec(ctx, `UPDATE `+pgStateTable+` SET system_id = $1 WHERE source = $2 AND system_id IS NULL`, here, s.o.Name); err != nil {
			return st, fmt.Errorf("outbox: record the cluster's system identifier: %w", err)
		}
	}
	return st, nil
}

func (s *pgStore) scan(rows pgx.Rows) ([]row, error) {
	defer rows.Close()
	var out []row
	now := time.Now()
	for rows.Next() {
		var rw row
		var txid string
		var key, headers *string
		var age float64
		if err := rows.Scan(&rw.pos.id, &txid, &rw.msg.Topic, &key, &headers, &rw.msg.Payload, &age); err != nil {
			return nil, fmt.Errorf("outbox: read row: %w", err)
		}
		t, err := strconv.ParseUint(txid, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("outbox: row %d: txid %q: %w", rw.pos.id, txid, err)
		}
		rw.pos.txid = t
		if key != nil {
			rw.msg.Key = *key
		}
		if headers != nil {
			if rw.msg.Headers, err = decodeHeaders(*headers); err != nil {
				return nil, fmt.Errorf("outbox: row %d: %w", rw.pos.id, err)
			}
		}
		rw.size = encodedSize(&rw.msg)
		rw.age = time.Duration(age * float64(time.Second))
		rw.readAt = now
		out = append(out, rw)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox: read rows: %w", err)
	}
	return out, nil
}

func (s *pgStore) next(ctx context.Context, cur pos, limit int) ([]row, bool, error) {
	rows, err := s.conn.Query(ctx, s.sqlNext(), strconv.FormatUint(cur.txid, 10), cur.id, limit)
	if err != nil {
		return nil, false, fmt.Errorf("outbox: select rows: %w", err)
	}
	out, err := s.scan(rows)
	if err != nil || len(out) > 0 {
		return out, false, err
	}
	err = s.conn.QueryRow(ctx, s.sqlOpenRows(), strconv.FormatUint(cur.txid, 10), cur.id).Scan(new(int))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("outbox: look for open rows: %w", err)
	}
	return nil, true, nil
}

func (s *pgStore) claimed(ctx context.Context, cur, end pos) ([]row, error) {
	rows, err := s.conn.Query(ctx, s.sqlClaimed(), strconv.FormatUint(cur.txid, 10), cur.id, strconv.FormatUint(end.txid, 10), end.id)
	if err != nil {
		return nil, fmt.Errorf("outbox: select claimed rows: %w", err)
	}
	return s.scan(rows)
}

func (s *pgStore) saveClaim(ctx context.Context, end pos) error {
	tag, err := s.conn.Exec(ctx, `UPDATE `+pgStateTable+` SET claim_txid = $1::text::xid8, claim_id = $2, updated_at = now() WHERE source = $3`,
		strconv.FormatUint(end.txid, 10), end.id, s.o.Name)
	if err != nil {
		return fmt.Errorf("outbox: record claim: %w", err)
	}
	if tag.RowsAffected() != 1 {
		return errors.New("outbox: record claim: the state row is gone")
	}
	return nil
}

func (s *pgStore) complete(ctx context.Context, cur, end pos, batch []row, nextClaim *pos) (int64, error) {
	ct, ci, et, ei := strconv.FormatUint(cur.txid, 10), cur.id, strconv.FormatUint(end.txid, 10), end.id
	var nt *string
	var ni *int64
	if nextClaim != nil {
		t := strconv.FormatUint(nextClaim.txid, 10)
		nt, ni = &t, &nextClaim.id
	}
	ids := make([]int64, len(batch))
	for i, rw := range batch {
		ids[i] = rw.pos.id
	}
	// One explicit transaction in two round trips: BEGIN, the removal of exactly the published
	// ids, the count of rows left in the range and the cursor move go in one pipeline; COMMIT
	// only if all of them are as expected.
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(s.sqlRemove(), ids)
	b.Queue(s.sqlRangeCount(), ct, ci, et, ei)
	b.Queue(`UPDATE `+pgStateTable+` SET cursor_txid = $3::text::xid8, cursor_id = $4, claim_txid = $5::text::xid8, claim_id = $6,
		relayed_total = relayed_total + $7, last_relayed_at = now(), updated_at = now()
		WHERE source = $8 AND cursor_txid = $1::text::xid8 AND cursor_id = $2 RETURNING relayed_total`,
		ct, ci, et, ei, nt, ni, len(batch), s.o.Name)
	br := s.conn.SendBatch(ctx, b)
	_, err := br.Exec()
	var removed pgconn.CommandTag
	if err == nil {
		removed, err = br.Exec()
	}
	var stray int64
	if err == nil {
		err = br.QueryRow().Scan(&stray)
	}
	var total int64
	if err == nil {
		err = br.QueryRow().Scan(&total)
		if errors.Is(err, pgx.ErrNoRows) {
			err = errors.New("the state row moved: another relay wrote it")
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil && removed.RowsAffected() != int64(len(batch)) {
		err = fmt.Errorf("%w: %w: source %s: batch of %d rows: %d removed", ErrPermanent, ErrRowsChanged, s.o.Name, len(batch), removed.RowsAffected())
	}
	if err == nil && stray > 0 {
		err = fmt.Errorf("%w: %w: source %s: %d rows inside the batch's range were not published", ErrPermanent, ErrStrayRows, s.o.Name, stray)
	}
	if err != nil {
		// Best effort: a broken session rolls back by itself, and the caller drops it.
		_, _ = s.conn.Exec(ctx, `ROLLBACK`)
		if stray > 0 { // name some of them for the operator
			var some *string
			_ = s.conn.QueryRow(ctx, `SELECT string_agg(txid::text || '/' || id::text, ' ') FROM (SELECT txid, id FROM `+s.o.Table+pgRange+s.mark+
				` ORDER BY txid, id LIMIT 20) x`, ct, ci, et, ei).Scan(&some)
			if some != nil {
				err = fmt.Errorf("%w (batch (%s/%d, %s/%d], first rows txid/id: %s)", err, ct, ci, et, ei, *some)
			}
		}
		return 0, fmt.Errorf("outbox: complete batch: %w", err)
	}
	tag, err := s.conn.Exec(ctx, `COMMIT`)
	if err != nil {
		return 0, fmt.Errorf("outbox: complete batch: commit: %w", err)
	}
	if tag.String() != "COMMIT" { // PostgreSQL answers COMMIT of a failed transaction with ROLLBACK
		return 0, fmt.Errorf("outbox: complete batch: the transaction rolled back (%s)", tag)
	}
	return total, nil
}

func (s *pgStore) ping(ctx context.Context) error { return s.conn.Ping(ctx) }

// wait sleeps d on the session, returning early on a NOTIFY imago_outbox (sent only by the
// optional trigger an operator may attach to a table; the migrations attach none).
func (s *pgStore) wait(ctx context.Context, d time.Duration) (bool, error) {
	if s.woken.Swap(false) {
		return true, nil
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := s.conn.PgConn().WaitForNotification(wctx)
	s.woken.Store(false)
	if err != nil && ctx.Err() == nil && wctx.Err() != nil {
		return false, nil // the poll interval passed
	}
	return err == nil, err
}

func (s *pgStore) backlog(ctx context.Context, cur pos) (int64, error) {
	var n int64
	err := s.conn.QueryRow(ctx, s.sqlBacklog(), strconv.FormatUint(cur.txid, 10), cur.id).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("outbox: count backlog: %w", err)
	}
	return n, nil
}

// The relay's reads and writes of the outbox table. Each one is a range of the (txid, id)
// index or a few primary keys, written so that the plan stays one whatever the table's
// statistics say: a queue table is mostly deleted rows between two vacuums and changes faster
// than ANALYZE follows (TestPostgresRelayPlans checks the plans on such a table).

// pgRange is the batch (cur, end]: $1/$2 to $3/$4.
const pgRange = ` WHERE (txid, id) > ($1::text::xid8, $2) AND (txid, id) <= ($3::text::xid8, $4)`

// sqlNext reads up to $3 final rows after ($1, $2).
func (s *pgStore) sqlNext() string {
	return `SELECT ` + s.selCol + ` FROM ` + s.o.Table + `
		WHERE (txid, id) > ($1::text::xid8, $2) AND txid < pg_snapshot_xmin(pg_current_snapshot())` + s.mark + `
		ORDER BY txid, id LIMIT $3`
}

// sqlOpenRows finds a row after ($1, $2), final or not. In index order with LIMIT 1: as
// EXISTS, PostgreSQL planned a sequential scan of a queue table full of deleted rows (3 ms and
// the whole heap per empty read on a 60 MB table without vacuum).
func (s *pgStore) sqlOpenRows() string {
	return `SELECT 1 FROM ` + s.o.Table + ` WHERE (txid, id) > ($1::text::xid8, $2)` + s.mark + ` ORDER BY txid, id LIMIT 1`
}

// sqlClaimed reads the rows of the batch (cur, end].
func (s *pgStore) sqlClaimed() string {
	return `SELECT ` + s.selCol + ` FROM ` + s.o.Table + pgRange + s.mark + ` ORDER BY txid, id`
}

// sqlRemove deletes (or marks) the published ids $1.
func (s *pgStore) sqlRemove() string {
	if s.o.Mode == ModeMark {
		return `UPDATE ` + s.o.Table + ` SET relayed_at = clock_timestamp() WHERE id = ANY($1) AND relayed_at IS NULL`
	}
	return `DELETE FROM ` + s.o.Table + ` WHERE id = ANY($1)`
}

// sqlRangeCount counts the rows left in the batch (cur, end].
func (s *pgStore) sqlRangeCount() string {
	return `SELECT count(*) FROM ` + s.o.Table + pgRange + s.mark
}

// sqlBacklog counts the rows after ($1, $2). The session runs without parallel workers (see
// openPG): this count was planned as a parallel scan that started two worker processes and
// held the relay for 85 ms.
func (s *pgStore) sqlBacklog() string {
	return `SELECT count(*) FROM ` + s.o.Table + ` WHERE (txid, id) > ($1::text::xid8, $2)` + s.mark
}
