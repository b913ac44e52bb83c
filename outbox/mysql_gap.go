package outbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/go-sql-driver/mysql"
)

// The MySQL/MariaDB gap check (see "Commit order in MySQL and MariaDB" in the package
// documentation).
//
// information_schema.innodb_trx is a cache that InnoDB refreshes only when nobody has read it
// for 100 ms: one session reading it faster (a monitoring agent, another relay) freezes it,
// for as long as it keeps reading. A view of it is therefore trusted only once it shows a
// sentinel: a transaction the relay opens on a new session after reading MAX(id). A view that
// shows the sentinel was taken after the sentinel began, so after MAX(id) was read, so every
// transaction that could still fill a gap below MAX(id) and has not ended is in it. A view
// without the sentinel is stale: the relay waits (longer each time, with jitter, so that two
// relays do not keep the cache frozen for each other) and reads again. It stalls while the
// cache stays frozen; it never passes a gap on a stale view.
//
// The sentinel also takes an InnoDB transaction id (trx_id) before the relay reads the table:
// a locking read of a state-table key that cannot exist (the source name is never empty)
// takes an intention lock on the table, which makes the transaction read-write, on MySQL 8
// as on MariaDB. trx_id comes from one counter that only grows, and a transaction is given
// one when it first writes or locks, so it orders the start of writing without any clock: a
// transaction whose trx_id is below the sentinel's began writing before the sentinel did,
// so before MAX(id) was read. A view is fresh only once it shows the sentinel with its
// trx_id (a view taken between the sentinel's start and its locking read is read again).
//
// Transactions are named by (trx_mysql_thread_id, trx_started): MariaDB reports every
// transaction that has not written with trx_id 0, MySQL a pseudo id at or above 2^48 (real
// ids take 48 bits), and a transaction's trx_id appears when it first writes. Of the
// transactions in the first fresh view the relay waits for those that may have written
// (trx_rows_modified > 0, trx_lock_structs > 0: an INSERT holds an intention lock on the
// table until its transaction ends, or a statement running now: trx_query not NULL, an
// INSERT between allocating its id and locking) unless they are younger than the sentinel:
//   - a trx_id below the sentinel's is never younger, whatever the clock says: that writer
//     may hold an id below MAX(id) (a database server whose clock was stepped back between
//     its start and the sentinel's made it look younger by trx_started);
//   - otherwise (a larger trx_id, or none yet) it is younger when it started after the
//     sentinel by trx_started: the sentinel's own trx_started in that view, so both times
//     are read off one clock (InnoDB renders trx_started in the server's system time zone,
//     not the session's, so NOW() could differ from it by hours; whole seconds, so one
//     started in the same second is kept), and by no more than the time that really passed
//     since the MAX(id) read (plus 2 s for the truncation): one that looks younger by more
//     is kept too, the system clock having been set back. The clock still matters here
//     because an INSERT that is its transaction's first write allocates its id before InnoDB
//     gives the transaction its trx_id: a transaction that started (read-only) before the
//     gap and was between the two while the sentinel took its trx_id is waited for by its
//     trx_started. An idle transaction that has only read holds no id and is not waited for.
//
// A prepared XA transaction (thread id 0) that wrote is waited for like any other: it may
// hold an outbox row that commits later.
//
// The invisible writer. An INSERT that is the first InnoDB operation of its transaction (an
// autocommit INSERT, say) allocates its id before the transaction is listed in innodb_trx
// with a trx_id. A writer descheduled in that instant (a loaded host, a container's CPU
// quota throttling the thread for up to 100 ms) while the relay reads MAX(id), takes its
// sentinel and reads a fresh view is in no view: the check finds nobody to wait for; the
// writer then starts its transaction (trx_id above the sentinel's, trx_started after it:
// younger), and commits its row below the cursor, never to be published. So a round that
// finds no writer left does not pass the gap: GapSettle after the MAX(id) read the check
// takes a second sentinel and a fresh view and waits, as in the first round, for every
// transaction that may have written and is not younger than that second sentinel. A writer
// that allocated its id before the MAX(id) read and was listed with its trx_id before the
// second sentinel took its own has the smaller trx_id, and is waited for (or has committed,
// and the re-read shows its row); one that is listed without a trx_id yet started before the
// second sentinel by trx_started. Only a writer kept off the CPU for longer than GapSettle
// between allocating its id and being listed could still be missed. Gaps filled by their
// writers' commits never reach the second round (the re-read that shows the row drops the
// check); only gaps nobody fills, rolled-back inserts, wait for it.

// gapCheck follows one gap below high.
type gapCheck struct {
	high  int64
	since time.Time // local clock when MAX(id) was read: paces the delays and the grace period

	sentinel   *sql.Conn // open until a fresh view has shown it
	sentinelID int64
	opened     time.Time // local clock before the sentinel began: how long a younger one can have run
	confirm    bool      // the second round: its sentinel is taken GapSettle after since

	trx       map[trxKey]bool // the transactions to wait for; nil until a fresh view
	fallback  bool            // no PROCESS privilege: pass the gap after GapGrace
	nextProbe time.Time
	stale     int  // consecutive stale views
	warned    bool // the stale-cache warning was logged for this gap
}

// trxKey names an InnoDB transaction.
type trxKey struct {
	thread  int64
	started time.Time
}

// trxRow is one row of innodb_trx.
type trxRow struct {
	key      trxKey
	id       uint64 // trx_id: 0 (MariaDB) or a pseudo id >= 2^48 (MySQL) until it writes
	mayWrite bool
}

// maxTrxID bounds InnoDB's transaction ids, stored in 48 bits; MySQL shows a transaction
// without one under a pseudo id above it.
const maxTrxID = 1<<48 - 1

// hasTrxID reports whether a transaction has been given a transaction id (it wrote or
// locked), which orders it against every other that has one.
func (t trxRow) hasTrxID() bool { return t.id != 0 && t.id <= maxTrxID }

// trxViewHook, set only by tests, sees each view of innodb_trx the gap check reads, with the
// thread id of the (last) sentinel, and returns the view the check goes on with: a test
// cannot step the database server's clock, nor deschedule a writer in the instant before
// InnoDB lists it, so it shows the check the views those would.
var trxViewHook func(view []trxRow, sentinel int64) []trxRow

// staleWarnAfter is how long the relay stalls on a frozen innodb_trx cache before it warns.
const staleWarnAfter = 30 * time.Second

// probeDelay is the pause before the next innodb_trx read: above 100 ms so the cache can
// refresh, with jitter growing with the count of stale views (up to about 2 s) so that
// several readers drift apart.
func probeDelay(stale int) time.Duration {
	base := 110 * time.Millisecond
	span := min(100*time.Millisecond<<min(stale, 5), 2*time.Second)
	return base + rand.N(span)
}

// dropGap abandons the gap check in progress, ending its sentinel transaction.
func (s *mysqlStore) dropGap() {
	if s.gap != nil && s.gap.sentinel != nil {
		_ = s.gap.sentinel.Close() // a rollback: the sentinel only read
	}
	s.gap = nil
}

// checkGap advances the gap check for a gap below high; it reports whether the watermark moved.
func (s *mysqlStore) checkGap(ctx context.Context, high int64) (bool, error) {
	now := time.Now()
	g := s.gap
	if g == nil {
		return false, s.startGap(ctx, high)
	}
	if now.Before(g.nextProbe) {
		return false, nil
	}
	if g.fallback {
		if now.Sub(g.since) < s.o.GapGrace {
			return false, nil
		}
		return s.passGap(), nil
	}
	if g.sentinel == nil && g.trx == nil {
		// The second round begins: its sentinel takes its trx_id now, GapSettle or more
		// after MAX(id) was read. The check's last read of innodb_trx is over 100 ms old,
		// so this one is fresh unless another session keeps the cache frozen.
		c, id, err := s.openSentinel(ctx)
		if err != nil {
			return false, err
		}
		g.sentinel, g.sentinelID, g.opened = c, id, now
	}
	view, err := s.readTrx(ctx)
	if err != nil {
		var me *mysql.MySQLError
		if g.trx == nil && errors.As(err, &me) && (me.Number == 1227 || me.Number == 1142) { // access denied
			s.o.Logger.Warn("outbox relay: cannot read information_schema.innodb_trx (grant PROCESS); passing id gaps after a grace period",
				"source", s.o.Name, "grace", s.o.GapGrace)
			g.fallback = true
			return false, nil
		}
		return false, err
	}
	if trxViewHook != nil {
		view = trxViewHook(view, g.sentinelID)
	}
	if g.trx == nil {
		// The sentinel with its trx_id: the view was taken after its locking read.
		fresh := false
		var sentinel trxRow
		for _, t := range view {
			if t.key.thread == g.sentinelID && t.hasTrxID() {
				fresh, sentinel = true, t
				break
			}
		}
		if !fresh {
			g.stale++
			g.nextProbe = now.Add(probeDelay(g.stale))
			if !g.warned && now.Sub(g.since) > staleWarnAfter {
				g.warned = true
				s.o.Logger.Warn("outbox relay: information_schema.innodb_trx stays stale (another session reads it more often than every 100 ms); rows after an id gap wait",
					"source", s.o.Name, "waiting", now.Sub(g.since).Round(time.Second))
			}
			return false, nil
		}
		_ = g.sentinel.Close()
		g.sentinel = nil
		g.trx = map[trxKey]bool{}
		passed := now.Sub(g.opened) + 2*time.Second
		for _, t := range view {
			wroteBefore := t.hasTrxID() && t.id < sentinel.id
			younger := !wroteBefore && t.key.started.After(sentinel.key.started) &&
				t.key.started.Sub(sentinel.key.started) <= passed
			if t.key.thread == g.sentinelID || t.key.thread == s.self || !t.mayWrite || younger {
				continue
			}
			g.trx[t.key] = true
		}
		if len(g.trx) == 0 {
			return s.settleGap(), nil
		}
		g.nextProbe = now.Add(probeDelay(0))
		return false, nil
	}
	// A later view is at least as recent as the fresh one: a transaction missing from it ended.
	for _, t := range view {
		if g.trx[t.key] {
			g.nextProbe = now.Add(probeDelay(0))
			return false, nil
		}
	}
	return s.settleGap(), nil
}

// settleGap is called when a round of the check finds no writer left to wait for: after the
// second round it passes the gap; after the first it schedules the second, GapSettle after
// MAX(id) was read (see "The invisible writer" above).
func (s *mysqlStore) settleGap() bool {
	g := s.gap
	if g.confirm {
		return s.passGap()
	}
	g.confirm = true
	g.trx, g.stale = nil, 0
	// Over 100 ms after this view, so that the cache shows the second sentinel.
	g.nextProbe = later(g.since.Add(s.o.GapSettle), time.Now().Add(probeDelay(0)))
	return false
}

// startGap reads MAX(id), then opens the sentinel transaction.
func (s *mysqlStore) startGap(ctx context.Context, high int64) error {
	// Every missing id below the highest committed id visible now can be settled by the same
	// check, not only those below this page of rows.
	var maxID sql.NullInt64
	if err := s.conn.QueryRowContext(ctx, `SELECT MAX(id) FROM `+s.o.Table).Scan(&maxID); err != nil {
		return fmt.Errorf("outbox: read the highest id: %w", err)
	}
	g := &gapCheck{high: max(high, maxID.Int64), since: time.Now()}
	g.opened = g.since
	c, id, err := s.openSentinel(ctx)
	if err != nil {
		return err
	}
	g.sentinel, g.sentinelID = c, id
	g.nextProbe = g.since.Add(s.o.GapCheckDelay)
	s.gap = g
	return nil
}

// openSentinel opens a sentinel transaction on a new session and gives it its trx_id; it
// returns the session and its thread id.
func (s *mysqlStore) openSentinel(ctx context.Context) (*sql.Conn, int64, error) {
	c, err := s.aux.Conn(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("outbox: open the gap check's sentinel session: %w", err)
	}
	var id int64
	if err := c.QueryRowContext(ctx, `SELECT CONNECTION_ID()`).Scan(&id); err != nil {
		_ = c.Close()
		return nil, 0, fmt.Errorf("outbox: sentinel session: %w", err)
	}
	// The locking read finds no row (no source is named ''), and under READ COMMITTED locks
	// no gap either; its intention lock on the table gives the transaction its trx_id, and
	// conflicts with no row lock the relay's session or another relay takes.
	for _, q := range []string{
		`SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED`,
		`START TRANSACTION`,
		`SELECT source FROM ` + mysqlStateTable + ` WHERE source = '' FOR UPDATE`,
	} {
		if _, err := c.ExecContext(ctx, q); err != nil {
			_ = c.Close()
			return nil, 0, fmt.Errorf("outbox: sentinel transaction: %w", err)
		}
	}
	return c, id, nil
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// passGap makes every id up to the gap's high final.
func (s *mysqlStore) passGap() bool {
	s.wm = max(s.wm, s.gap.high)
	s.dropGap()
	return true
}

// readTrx reads information_schema.innodb_trx.
func (s *mysqlStore) readTrx(ctx context.Context) ([]trxRow, error) {
	rows, err := s.conn.QueryContext(ctx, `SELECT trx_mysql_thread_id, trx_started, trx_id,
		trx_rows_modified > 0 OR trx_lock_structs > 0 OR trx_query IS NOT NULL
		FROM information_schema.innodb_trx`)
	if err != nil {
		return nil, fmt.Errorf("outbox: read information_schema.innodb_trx: %w", err)
	}
	defer rows.Close()
	var out []trxRow
	for rows.Next() {
		var t trxRow
		if err := rows.Scan(&t.key.thread, &t.key.started, &t.id, &t.mayWrite); err != nil {
			return nil, fmt.Errorf("outbox: read innodb_trx: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}
