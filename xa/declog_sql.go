package xa

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/imagomq/imago/internal/mysqlpool"
	"github.com/imagomq/imago/migrations"
)

// The decision log in a database table (Options.DecisionDB): imago.xa_decisions in
// PostgreSQL, imago_xa_decisions in MySQL/MariaDB (migrations.ApplyXA). Same contract as the
// file log: one writer goroutine group-commits everything queued in one transaction, a
// multi-row upsert keyed by (node_id, gtrid) with the keys sorted (concurrent coordinators
// lock rows in one order), so a row holds the last record of its transaction. appendSync
// returns once the COMMIT that holds its record succeeded: that commit, which the database
// makes durable, is the log's fsync. A write whose outcome is unknown fails the log, as a
// failed fsync fails the file log, until the writer has read the table back on a new session
// and settled what the write left (declog_sql_heal.go).
//
// Each row holds the full record in the file log's frame encoding (column record, read back
// at open and checked by its CRC) and a readable copy for DBAs (status, client_id,
// request_digest, times, decided_by). Rows of finished transactions leave once past the
// retention by the wall clock and by the monotonic clock, by the rule the file log's
// compaction uses (finishedAges), at open and every sqlSweepEvery.
//
// Several coordinators may share the table: nodes with their own ids at once, and, in a
// cluster, the leaders of one node id one after the other (the node lease in the table's
// database keeps two from acting on one id at once). A coordinator reads and deletes only the
// rows of its own node id, and of those only the ones it holds (read at its open, or written
// since), each aged by its own two clocks from when it read or wrote it; a row another
// coordinator wrote later is not one it holds, so it never deletes it. A row read at open is
// aged by the wall clock at open, as the coordinator that loads it ages it (Coordinator.load):
// a node that takes over with its wall clock ahead of the writer's drops rows early, and
// forgets their client ids with them; the clocks of the nodes must agree (docs/operations.md,
// "Clock steps").

const (
	// sqlSweepEvery is the period of the retention sweep.
	sqlSweepEvery = time.Minute
	// sqlMaxBatch caps the records of one write (as the file log's batch).
	sqlMaxBatch = 4096
	// mysqlDecisionRows caps the rows of one MySQL statement (11 bind parameters each, and a
	// packet well under max_allowed_packet). A statement has a power-of-two number of rows,
	// the last one repeated to fill it, so a pool keeping prepared statements (OpenMySQLDB)
	// reuses at most 11 texts.
	mysqlDecisionRows = 1 << 10
	// sqlClientSlack is how much longer than the write timeout the client waits for a write:
	// the database's own bound (writerConn) answers first, with a known outcome.
	sqlClientSlack = 5 * time.Second
	// sqlRetryPause and sqlMaxRetryPause are the first and the longest pause between the
	// attempts of a write the database rolled back (nothing of it was committed, so a retry is
	// safe).
	sqlRetryPause    = 10 * time.Millisecond
	sqlMaxRetryPause = time.Second
)

// sqlLogConfig is what openSQLDecisionLog needs.
type sqlLogConfig struct {
	db           *sql.DB
	dialect      string // "mysql" (also "mariadb") or "postgres"
	node         string
	retention    time.Duration
	writeTimeout time.Duration // bounds one write (its outcome is then unknown: the log fails)
	sweepEvery   time.Duration
	now          func() time.Time
	elapsed      func() time.Duration // the monotonic clock (nil: the monotonic reading of now)
	onSync       func(time.Duration)
	onHeal       func() // after the log healed (declog_sql_heal.go); the writer goroutine calls it
	log          *slog.Logger
}

type sqlDecisionLog struct {
	cfg   sqlLogConfig
	table string

	entries map[string]record // the last record per gtrid in the table (writer goroutine only)
	ages    *finishedAges     // what the sweep keeps (writer goroutine only)
	conn    *sql.Conn         // the writer's session (writerConn; writer goroutine only)

	sqlHeal
	logQueue
}

// writerConn returns the writer's own session, opened on first use and after a failed write,
// with the write timeout set on the server: PostgreSQL's statement_timeout (a slower write is
// cancelled, 57014), MySQL/MariaDB's innodb_lock_wait_timeout (a write waiting longer for a
// row lock is rolled back, 1205; whole seconds). The values are numbers formatted here, not
// input. The session is discarded, never returned to the pool with those settings.
//
// The session is pinged before each write (one round trip): the server may have ended it
// since the last one (a restart, a crash such as PostgreSQL's PANIC on a full disk, which
// another session's write may cause a moment after this one's, a failover). A write sent on
// a session already dead has an unknown outcome to the client, which would fail the log; a
// ping that fails sent nothing of a write, and the write goes on a new session.
func (l *sqlDecisionLog) writerConn(ctx context.Context) (*sql.Conn, error) {
	if l.conn != nil {
		pctx, cancel := context.WithTimeout(ctx, l.cfg.writeTimeout) // the rest of ctx to connect again
		err := l.conn.PingContext(pctx)
		cancel()
		if err == nil {
			return l.conn, nil
		}
		l.cfg.log.Warn("decision log: the writer's session ended since its last write; opening a new one", "table", l.table, "err", err)
		l.dropWriterConn()
	}
	conn, err := l.cfg.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	q := fmt.Sprintf("SET SESSION innodb_lock_wait_timeout = %d", max(1, int64(math.Ceil(l.cfg.writeTimeout.Seconds()))))
	if l.cfg.dialect == migrations.Postgres {
		q = fmt.Sprintf("SET statement_timeout = %d", max(1, l.cfg.writeTimeout.Milliseconds()))
	}
	if _, err := conn.ExecContext(ctx, q); err != nil {
		discardConn(conn)
		return nil, err
	}
	if err := l.identify(ctx, conn); err != nil {
		discardConn(conn)
		return nil, err
	}
	l.conn = conn
	return conn, nil
}

// dropWriterConn discards the writer's session (after a failed write, and at close).
func (l *sqlDecisionLog) dropWriterConn() {
	if l.conn != nil {
		discardConn(l.conn)
		l.conn = nil
	}
}

// discardConn closes conn's session instead of returning it to the pool.
func discardConn(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

// openSQLDecisionLog creates or updates the table (migrations.ApplyXA), reads the rows of this
// node back, deletes those past the retention and returns the last record of every other
// transaction. A row that does not decode stops the open: skipping a commit decision could
// have recovery roll back a transaction that committed elsewhere.
func openSQLDecisionLog(ctx context.Context, cfg sqlLogConfig) (*sqlDecisionLog, []record, error) {
	dialect, ok := migrations.Dialect(cfg.dialect)
	if !ok {
		return nil, nil, fmt.Errorf("open decision log: dialect %q: want mysql or postgres", cfg.dialect)
	}
	cfg.dialect = dialect
	if cfg.sweepEvery <= 0 {
		cfg.sweepEvery = sqlSweepEvery
	}
	l := &sqlDecisionLog{
		cfg: cfg, table: "imago.xa_decisions",
		entries: map[string]record{}, ages: newFinishedAges(cfg.retention, cfg.now, cfg.elapsed),
	}
	if dialect == migrations.MySQL {
		l.table = "imago_xa_decisions"
	}
	l.logQueue = newLogQueue(cfg.log, "table", l.table)
	l.heals = true
	if err := migrations.ApplyXA(ctx, cfg.db, dialect); err != nil {
		return nil, nil, fmt.Errorf("open decision log table %s: %w", l.table, err)
	}
	l.checkDurability(ctx)
	if err := l.load(ctx); err != nil {
		return nil, nil, err
	}
	l.ages.loaded(l.entries)
	l.sweep(ctx)
	out := make([]record, 0, len(l.entries))
	for _, r := range l.entries {
		out = append(out, r)
	}
	go l.run()
	return l, out, nil
}

// load reads this node's rows into entries.
func (l *sqlDecisionLog) load(ctx context.Context) error {
	q := "SELECT gtrid, record FROM " + l.table + " WHERE node_id = " + l.ph(1)
	rows, err := l.cfg.db.QueryContext(ctx, q, l.cfg.node)
	if err != nil {
		return fmt.Errorf("read decision log table %s: %w", l.table, err)
	}
	defer rows.Close()
	for rows.Next() {
		var gtrid string
		var frame []byte
		if err := rows.Scan(&gtrid, &frame); err != nil {
			return fmt.Errorf("read decision log table %s: %w", l.table, err)
		}
		r, n, err := decodeFrame(frame)
		switch {
		case err == nil && n != len(frame):
			err = fmt.Errorf("%w: %d bytes after the frame", errBadRecord, len(frame)-n)
		case err == nil && r.Gtrid != gtrid:
			err = fmt.Errorf("%w: the record is of gtrid %s", errBadRecord, r.Gtrid)
		}
		if err != nil {
			return fmt.Errorf("decision log table %s, node %s, gtrid %q: %w (the coordinator wrote every row; restore it or delete it knowing what it decided)", l.table, l.cfg.node, gtrid, err)
		}
		l.entries[gtrid] = r
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read decision log table %s: %w", l.table, err)
	}
	return nil
}

// checkDurability warns when the database does not make a commit durable: then neither is
// a decision. It does not refuse: the operator may have reasons (a replica that is synchronous).
func (l *sqlDecisionLog) checkDurability(ctx context.Context) {
	var setting, value string
	var err error
	if l.cfg.dialect == migrations.Postgres {
		setting = "synchronous_commit"
		if err = l.cfg.db.QueryRowContext(ctx, "SELECT current_setting('synchronous_commit')").Scan(&value); err == nil && value == "off" {
			l.cfg.log.Warn("decision log: PostgreSQL runs with synchronous_commit = off, so a commit decision may be lost in a crash of the database", "table", l.table)
		}
		var fsync string
		if err == nil {
			setting = "fsync"
			if err = l.cfg.db.QueryRowContext(ctx, "SELECT current_setting('fsync')").Scan(&fsync); err == nil && fsync == "off" {
				l.cfg.log.Warn("decision log: PostgreSQL runs with fsync = off, so a commit decision may be lost in a crash of the machine", "table", l.table)
			}
		}
	} else {
		setting = "innodb_flush_log_at_trx_commit"
		if err = l.cfg.db.QueryRowContext(ctx, "SELECT CAST(@@innodb_flush_log_at_trx_commit AS CHAR)").Scan(&value); err == nil && value != "1" {
			l.cfg.log.Warn("decision log: innodb_flush_log_at_trx_commit is not 1, so a commit decision may be lost in a crash", "table", l.table, "value", value)
		}
	}
	if err != nil {
		l.cfg.log.Warn("decision log: cannot read the database's durability setting", "setting", setting, "err", err)
	}
}

// close writes what was queued and stops the writer. The database stays open (its owner
// closes it).
func (l *sqlDecisionLog) close() error {
	if l.stopWriter() {
		l.dropWriterConn() // the writer has returned
	}
	return nil
}

// run is the writer goroutine.
func (l *sqlDecisionLog) run() {
	defer close(l.done)
	sweep := time.NewTicker(l.cfg.sweepEvery)
	defer sweep.Stop()
	var batch []*logReq
	// Healing after a write of unknown outcome (declog_sql_heal.go): attempts on a timer.
	var heal *time.Timer
	var healC <-chan time.Time
	healPause, attempt := sqlHealPause, 0
	defer func() {
		if heal != nil {
			heal.Stop()
		}
	}()
	for {
		if l.unknown != nil && healC == nil {
			heal = time.NewTimer(healPause)
			healC = heal.C
		}
		batch = batch[:0]
		select {
		case req := <-l.reqs:
			batch = append(batch, req)
		case <-healC:
			healC = nil
			attempt++
			if l.tryHeal(attempt) {
				healPause, attempt = sqlHealPause, 0
			} else {
				healPause = min(2*healPause, sqlMaxHealPause)
			}
			continue
		case <-sweep.C:
			ctx, cancel := context.WithTimeout(context.Background(), l.cfg.writeTimeout)
			l.sweep(ctx)
			cancel()
			continue
		case <-l.stop:
			// Nothing is queued after closed was set: drain, write, stop.
			batch = l.drain(batch, int(^uint(0)>>1))
			if len(batch) > 0 {
				l.write(batch)
			}
			return
		}
		batch = l.drain(batch, sqlMaxBatch)
		l.write(batch)
	}
}

// write commits the batch's records (the last one per gtrid) in one transaction and answers
// every waiter with the outcome. A write the database certainly rolled back is retried for up
// to the write timeout and then answered errNotWritten, the log staying usable; a write whose
// outcome is unknown fails the log until it heals (declog_sql_heal.go).
func (l *sqlDecisionLog) write(batch []*logReq) {
	if batch = firstDecisionWins(batch, l.entries, l.cfg.log, l.where); len(batch) == 0 {
		return
	}
	if err := l.failedErr(); err != nil {
		answer(batch, notWritten(err))
		return
	}
	last := make(map[string]int, len(batch))
	for i, r := range batch {
		last[r.rec.Gtrid] = i
	}
	rows := make([]record, 0, len(last))
	for _, i := range last {
		rows = append(rows, batch[i].rec)
	}
	slices.SortFunc(rows, func(a, b record) int { return strings.Compare(a.Gtrid, b.Gtrid) })
	began := time.Now()
	rolledBack, err := l.upsert(rows)
	d := time.Since(began)
	if l.cfg.onSync != nil {
		l.cfg.onSync(d)
	}
	if d > time.Second {
		l.cfg.log.Warn("decision log: slow write", "table", l.table, "duration", d, "records", len(rows))
	}
	switch {
	case err == nil:
		for _, r := range rows {
			l.entries[r.Gtrid] = r
			l.ages.written(r)
		}
	case rolledBack:
		err = notWritten(fmt.Errorf("write decision log table %s (%d records): %w", l.table, len(rows), err))
		l.cfg.log.Error("decision log: write refused by the database until the write timeout; nothing of it was written", "table", l.table, "records", len(rows), "err", err)
	default:
		err = fmt.Errorf("write decision log table %s (%d records): %w", l.table, len(rows), err)
		l.noteUnknown(rows)
		l.fail(err)
	}
	answer(batch, err)
}

// upsert writes rows (sorted, one per gtrid) in one transaction. A write the database rolled
// back (writeRolledBack: a deadlock, a lock or statement timeout, a server that cannot be
// reached) is tried again, with a growing pause, as long as the write timeout since the first
// attempt has not passed; rolledBack then reports that nothing of it was written.
//
// The write timeout is enforced by the database (writerConn): a write slower than it is
// cancelled there and rolled back, a known outcome. The client waits sqlClientSlack longer, so
// only a database that does not answer at all (its outcome unknown) fails the log.
func (l *sqlDecisionLog) upsert(rows []record) (rolledBack bool, err error) {
	began := time.Now()
	pause := sqlRetryPause
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.writeTimeout+sqlClientSlack)
		var conn *sql.Conn
		if conn, err = l.writerConn(ctx); err == nil {
			if l.cfg.dialect == migrations.Postgres {
				_, err = conn.ExecContext(ctx, pgDecisionUpsert, l.pgArgs(rows)...)
			} else {
				err = l.mysqlUpsert(ctx, conn, rows)
			}
			if err != nil {
				l.dropWriterConn()
			}
		}
		cancel()
		if err == nil {
			return false, nil
		}
		if !writeRolledBack(err) {
			return false, err
		}
		if time.Since(began)+pause >= l.cfg.writeTimeout {
			return true, err
		}
		if attempt == 1 || attempt%10 == 0 {
			l.cfg.log.Warn("decision log: write rolled back by the database, retrying", "table", l.table, "attempt", attempt, "err", err)
		}
		time.Sleep(pause)
		pause = min(2*pause, sqlMaxRetryPause)
	}
}

// pgDecisionUpsert writes a batch with one statement: the rows arrive as arrays (one bind
// parameter each, whatever the batch size), in the order given (sorted; WITH ORDINALITY keeps
// it). A statement in autocommit mode is one transaction: its commit is the durability point.
const pgDecisionUpsert = `
INSERT INTO imago.xa_decisions AS d (node_id, gtrid, client_id, request_digest, status, created_at, decided_at, finished_at, decided_by, record, updated_at)
SELECT $1, u.g, u.c, u.dg, u.s, u.ca, u.da, u.fa, u.b, u.r, now()
  FROM unnest($2::text[], $3::text[], $4::bytea[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::text[], $10::bytea[])
       WITH ORDINALITY AS u(g, c, dg, s, ca, da, fa, b, r, i)
 ORDER BY u.i
ON CONFLICT (node_id, gtrid) DO UPDATE
   SET client_id = EXCLUDED.client_id, request_digest = EXCLUDED.request_digest, status = EXCLUDED.status,
       created_at = EXCLUDED.created_at, decided_at = EXCLUDED.decided_at, finished_at = EXCLUDED.finished_at,
       decided_by = EXCLUDED.decided_by, record = EXCLUDED.record, updated_at = EXCLUDED.updated_at`

func (l *sqlDecisionLog) pgArgs(rows []record) []any {
	n := len(rows)
	g, c, s, b := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	ca, da, fa := make([]*time.Time, n), make([]*time.Time, n), make([]*time.Time, n)
	frames, digests := make([][]byte, n), make([][]byte, n)
	ptr := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	for i := range rows {
		r := &rows[i]
		g[i], c[i], s[i], b[i] = r.Gtrid, readable(r.ClientID, maxClientIDLen), string(r.Status), readable(r.By, maxByLen)
		ca[i], da[i], fa[i] = ptr(r.Created), ptr(r.Decided), ptr(r.Finished)
		frames[i], digests[i] = appendRecord(nil, r), digestColumn(r) // nil: NULL
	}
	return []any{l.cfg.node, g, c, digests, s, ca, da, fa, b, frames}
}

// mysqlDecisionUpsertTail makes the row the new record, whatever it held.
const mysqlDecisionUpsertTail = `
ON DUPLICATE KEY UPDATE client_id = VALUES(client_id), request_digest = VALUES(request_digest), status = VALUES(status), created_at = VALUES(created_at),
  decided_at = VALUES(decided_at), finished_at = VALUES(finished_at), decided_by = VALUES(decided_by),
  record = VALUES(record), updated_at = VALUES(updated_at)`

// mysqlDecisionStmt is the decisions upsert for 1, 2, 4 ... mysqlDecisionRows rows.
var mysqlDecisionStmt = mysqlpool.NewMultiRow(
	"INSERT INTO imago_xa_decisions (node_id, gtrid, client_id, request_digest, status, created_at, decided_at, finished_at, decided_by, record, updated_at) VALUES ",
	"(?,?,?,?,?,?,?,?,?,?,UTC_TIMESTAMP(6))", mysqlDecisionUpsertTail, mysqlDecisionRows)

// mysqlUpsert writes rows: one statement in autocommit mode (one transaction, no BEGIN and
// COMMIT round trips) up to mysqlDecisionRows, several in one transaction past it.
func (l *sqlDecisionLog) mysqlUpsert(ctx context.Context, conn *sql.Conn, rows []record) error {
	if len(rows) <= mysqlDecisionRows {
		return l.mysqlExec(ctx, conn, rows)
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	for len(rows) > 0 {
		chunk := rows[:min(len(rows), mysqlDecisionRows)]
		rows = rows[len(chunk):]
		if err := l.mysqlExec(ctx, tx, chunk); err != nil {
			_ = tx.Rollback()
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%w: %w", errCommitOutcome, err)
	}
	return nil
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// mysqlExec runs one statement of a power-of-two number of rows: the last row repeated (the
// repeat writes its row again with the same values).
func (l *sqlDecisionLog) mysqlExec(ctx context.Context, ex execer, rows []record) error {
	size := mysqlDecisionStmt.RowsFor(len(rows))
	args := make([]any, 0, 10*size)
	var last []any
	for i := range rows {
		r := &rows[i]
		var digest any // NULL
		if d := digestColumn(r); d != nil {
			digest = d
		}
		last = []any{l.cfg.node, r.Gtrid, readable(r.ClientID, maxClientIDLen), digest, string(r.Status),
			mysqlTime(r.Created), mysqlTime(r.Decided), mysqlTime(r.Finished), readable(r.By, maxByLen), appendRecord(nil, r)}
		args = append(args, last...)
	}
	for i := len(rows); i < size; i++ {
		args = append(args, last...)
	}
	_, err := ex.ExecContext(ctx, mysqlDecisionStmt.Text(size), args...)
	return err
}

// digestColumn is the request_digest column of r: its digest, nil (NULL) when it has none.
func digestColumn(r *record) []byte {
	if r.Digest == "" {
		return nil
	}
	return []byte(r.Digest)
}

// mysqlTime is t as a DATETIME(6) value in UTC (whatever the connection's loc), or NULL.
func mysqlTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format("2006-01-02 15:04:05.000000")
}

// readable makes s fit a readable column: at most max bytes, valid UTF-8, no NUL (which
// PostgreSQL's text refuses). A value the column refused would fail the log; the record
// column keeps the exact bytes.
func readable(s string, max int) string {
	if len(s) > max {
		s = s[:max]
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// errCommitOutcome marks the failure of an explicit COMMIT: it may have committed.
var errCommitOutcome = errors.New("commit outcome unknown")

// writeRolledBack reports whether err, the error of one write, certainly means that nothing
// of it was committed. Every write is one statement in autocommit mode (or, for a big MySQL
// batch, statements inside a transaction rolled back on error; its COMMIT's error is
// errCommitOutcome), so an error the server answered for the statement means it was rolled
// back, except the errors of a session killed or a server shutting down, which may arrive
// after the commit. A connection that could not be made, or failed before the statement was
// sent, wrote nothing, whatever the server answered it (57P03 cannot_connect_now while it
// starts, recovers from a crash or shuts down). Anything else (a connection lost
// mid-statement, a context that expired) leaves the outcome unknown.
func writeRolledBack(err error) bool {
	if errors.Is(err, errCommitOutcome) {
		return false
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		return true // before the PgError it may wrap: the server refused the session, not a write
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1053, 1077, 1078, 1079, 1080, 1152, 1153, 1154, 1155, 1156, 1157, 1158, 1159, 1160, 1161, 1180, 1181, 1317, 1927:
			// Server shutdown, aborted connections, errors during COMMIT or ROLLBACK, a
			// query or connection killed: possibly after the commit.
			return false
		}
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		class := pe.Code[:min(2, len(pe.Code))]
		switch {
		case pgSessionEnded(pe):
			// The server ended the session, or crashed (PANIC: a WAL write failed, say for
			// lack of disk), while the statement ran: whatever its code, the commit may be
			// durable. The session flushes every session's WAL, segment after segment, so
			// its own commit can be fsync'd before it PANICs on another's record.
			return false
		case pe.Code == "57014": // query_canceled: the statement (and its implicit commit) did not complete
			return true
		case class == "08", class == "57", class == "58", class == "XX":
			return false // connection exception, operator intervention, system or internal error
		}
		return true
	}
	var ne *net.OpError
	switch {
	case errors.As(err, &ne) && ne.Op == "dial":
		return true
	case errors.Is(err, driver.ErrBadConn):
		// database/sql gives it back only after its own retries; the drivers return it only
		// when nothing was sent.
		return true
	}
	return pgconn.SafeToRetry(err)
}

// pgSessionEnded reports whether pe ended the session with it: severity FATAL or PANIC.
func pgSessionEnded(pe *pgconn.PgError) bool {
	sev := pe.SeverityUnlocalized
	if sev == "" {
		sev = pe.Severity
	}
	return sev == "FATAL" || sev == "PANIC"
}

// sweep deletes the rows of finished transactions past the retention by both clocks: what the
// file log's compaction would drop (finishedAges). A failure is logged and tried again next
// time.
func (l *sqlDecisionLog) sweep(ctx context.Context) {
	if l.failedErr() != nil {
		return
	}
	now, el := l.ages.clocks()
	var gone []string
	for g, r := range l.entries {
		if !l.ages.keep(r, now, el) {
			gone = append(gone, g)
		}
	}
	if len(gone) == 0 {
		return
	}
	slices.Sort(gone)
	deleted := 0
	for len(gone) > 0 {
		chunk := gone[:min(len(gone), mysqlDecisionRows)]
		gone = gone[len(chunk):]
		if err := l.delete(ctx, chunk); err != nil {
			l.cfg.log.Warn("decision log: deleting finished transactions failed; tried again later", "table", l.table, "err", err)
			return
		}
		for _, g := range chunk {
			delete(l.entries, g)
			l.ages.forget(g)
		}
		deleted += len(chunk)
	}
	l.cfg.log.Info("decision log: finished transactions past retention deleted", "table", l.table, "deleted", deleted, "kept", len(l.entries))
}

// unfinishedInFileLog counts the transactions a file decision log in dir leaves unfinished
// (none when there is no file): a coordinator moving to a table must not forget them.
func unfinishedInFileLog(dir string) (int, error) {
	data, err := os.ReadFile(filepath.Join(dir, logFileName))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read decision log file: %w", err)
	}
	_, recs, _ := replay(data) // a torn tail is cut at open too
	last := map[string]record{}
	for _, r := range recs {
		last[r.Gtrid] = r
	}
	n := 0
	for _, r := range last {
		if !r.Status.Final() {
			n++
		}
	}
	return n, nil
}

// delete removes the rows of gtrids (sorted), only if their status is final.
func (l *sqlDecisionLog) delete(ctx context.Context, gtrids []string) error {
	final := " AND status IN ('" + string(StatusCommitted) + "', '" + string(StatusRolledBack) + "')"
	if l.cfg.dialect == migrations.Postgres {
		_, err := l.cfg.db.ExecContext(ctx, "DELETE FROM imago.xa_decisions WHERE node_id = $1 AND gtrid = ANY($2::text[])"+final, l.cfg.node, gtrids)
		return err
	}
	size := mysqlDecisionStmt.RowsFor(len(gtrids)) // an IN list of power-of-two length, as the upsert
	args := make([]any, 0, size+1)
	args = append(args, l.cfg.node)
	for i := range size {
		args = append(args, gtrids[min(i, len(gtrids)-1)])
	}
	q := "DELETE FROM imago_xa_decisions WHERE node_id = ? AND gtrid IN (?" + strings.Repeat(",?", size-1) + ")" + final
	_, err := l.cfg.db.ExecContext(ctx, q, args...)
	return err
}

// ph is the n-th bind placeholder of the dialect.
func (l *sqlDecisionLog) ph(n int) string {
	if l.cfg.dialect == migrations.Postgres {
		return fmt.Sprintf("$%d", n)
	}
	return "?"
}
