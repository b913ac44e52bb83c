package xa

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/mysqlpool"
)

// OpenMySQLDB opens a connection pool for a MySQL/MariaDB resource, tuned for XA branches:
//
//   - A statement with arguments runs as a server-side prepared statement that the
//     connection keeps (up to 64, least recently used closed first), so a step is one
//     round trip where go-sql-driver alone takes two (prepare, execute, close). Arguments
//     stay bound parameters.
//   - Multi-statement text is enabled, so that a branch ends and prepares in one round trip
//     ("XA END x; XA PREPARE x", both built from the xid's hex literal, never from input).
//   - A statement's context is watched with context.AfterFunc (its end closes the session's
//     socket, as the driver's cancel does), not by the driver's watcher goroutine, which
//     costs two goroutine hand-offs per statement.
//
// OpenResource and `imago serve` use it; a *sql.DB from sql.Open works with MySQL too,
// with those round trips more.
func OpenMySQLDB(dsn string) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		// The parse error may quote the DSN, password included: do not wrap it.
		return nil, errors.New("cannot parse the MySQL DSN")
	}
	cfg.MultiStatements = true
	// Row counts are rows matched, as PostgreSQL counts them: an operation's expect_rows then
	// means the same on both (MariaDB's default counts rows changed, so an UPDATE to the
	// values a row already holds would count 0).
	cfg.ClientFoundRows = true
	return mysqlpool.Open(cfg)
}

// MySQL makes a MySQL/MariaDB database an XA resource. db must use go-sql-driver/mysql. The
// caller keeps ownership of db. At the first enlistment the server's version is checked:
// MySQL before 5.7.7 and MariaDB before 10.5 roll back a prepared XA branch when its client
// disconnects, which breaks two-phase commit, so they are refused.
func MySQL(name string, db *sql.DB) Resource {
	return &mysqlRM{sqlRM: sqlRM{name: name, sqldb: db}}
}

type mysqlRM struct {
	sqlRM
	phase time.Duration // Options.PhaseTimeout, for the session's wait_timeout; guarded by mu
}

func (r *mysqlRM) Driver() string      { return "mysql" }
func (r *mysqlRM) rm() resourceManager { return r }

// check refuses servers that lose prepared branches on disconnect. A success is remembered.
func (r *mysqlRM) check(ctx context.Context) error {
	return r.checkOnce(ctx, "SELECT VERSION()", mysqlVersionOK)
}

// mysqlVersionOK accepts MariaDB >= 10.5 and MySQL >= 5.7.7.
func mysqlVersionOK(v string) error {
	nums := strings.SplitN(strings.SplitN(v, "-", 2)[0], ".", 3)
	n := [3]int{}
	for i := 0; i < len(nums) && i < 3; i++ {
		n[i], _ = strconv.Atoi(nums[i])
	}
	less := func(a, b, c int) bool {
		if n[0] != a {
			return n[0] < a
		}
		if n[1] != b {
			return n[1] < b
		}
		return n[2] < c
	}
	if strings.Contains(strings.ToLower(v), "mariadb") {
		if less(10, 5, 0) {
			return fmt.Errorf("%w: MariaDB %s rolls back a prepared XA transaction when its client disconnects "+
				"(fixed in MariaDB 10.5, MDEV-742); two-phase commit needs MariaDB 10.5 or later", ErrUnsupportedServer, v)
		}
		return nil
	}
	if less(5, 7, 7) {
		return fmt.Errorf("%w: MySQL %s rolls back a prepared XA transaction when its client disconnects "+
			"(fixed in MySQL 5.7.7); two-phase commit needs MySQL 5.7.7 or later", ErrUnsupportedServer, v)
	}
	return nil
}

func (r *mysqlRM) start(ctx context.Context, xid Xid, timeout time.Duration) (branchConn, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	conn, err := r.sqldb.Conn(ctx)
	if err != nil {
		return nil, r.err("start", err)
	}
	b := &mysqlBranch{r: r, lit: mysqlXid(xid), conn: conn}
	_ = conn.Raw(func(dc any) error {
		b.multi = mysqlpool.Caching(dc) // opened by OpenMySQLDB: multi-statement text allowed
		return nil
	})
	if err := b.begin(ctx, r.sessionSetup(timeout)); err != nil {
		b.release(true)
		return nil, r.err("start", err)
	}
	return b, nil
}

func (r *mysqlRM) commit(ctx context.Context, xid Xid) error {
	_, err := r.sqldb.ExecContext(ctx, "XA COMMIT "+mysqlXid(xid))
	return r.err("commit", err)
}

func (r *mysqlRM) rollback(ctx context.Context, xid Xid) error {
	_, err := r.sqldb.ExecContext(ctx, "XA ROLLBACK "+mysqlXid(xid))
	return r.err("rollback", err)
}

// recover reads XA RECOVER. Imago's xids are printable ASCII, so the raw data column (gtrid
// then bqual, split by the two length columns) needs no CONVERT XID (which MariaDB lacks);
// rows of other formats are skipped before their data is looked at.
func (r *mysqlRM) recover(ctx context.Context) ([]Xid, error) {
	return r.recoverRows(ctx, "XA RECOVER", nil, func(rows *sql.Rows) (Xid, bool, error) {
		var format int64
		var glen, blen int
		var data []byte
		if err := rows.Scan(&format, &glen, &blen, &data); err != nil {
			return Xid{}, false, err
		}
		x, ok := decodeMySQLRecover(format, glen, blen, data)
		return x, ok, nil
	})
}

// decodeMySQLRecover turns one XA RECOVER row into an Xid of Imago's format.
func decodeMySQLRecover(format int64, glen, blen int, data []byte) (Xid, bool) {
	if format != int64(FormatID) || glen < 0 || blen < 0 || glen+blen != len(data) {
		return Xid{}, false
	}
	x := Xid{FormatID: FormatID, Gtrid: append([]byte(nil), data[:glen]...), Bqual: append([]byte(nil), data[glen:]...)}
	if _, _, _, ok := parseXid(x); !ok {
		return Xid{}, false
	}
	return x, true
}

// mysqlBranch is one XA branch on its pinned connection. MariaDB keeps a prepared branch
// attached to the session that prepared it (another session's XA COMMIT answers XAER_NOTA
// until that session ends), so phase 2 also runs here.
type mysqlBranch struct {
	r        *mysqlRM
	lit      string
	conn     *sql.Conn
	ended    bool
	prepared bool
	// multi: the connection accepts several statements in one text (OpenMySQLDB), so XA END
	// and XA PREPARE go in one round trip.
	multi bool
	// endUnknown: a combined XA END; XA PREPARE failed, so the branch may be active or idle.
	endUnknown bool
	// Read-only detection (mysql_readonly.go): wrote, a statement certainly changed a row;
	// unknown, one ran whose changes are not known; writes0, the handler write counters
	// read before the first statement that needed them (baselined).
	wrote, unknown, baselined bool
	writes0                   int64
}

// db is the pinned connection, for a statement whose changes the branch cannot count: the
// handler counters' baseline is read first (mysql_readonly.go).
func (b *mysqlBranch) db(ctx context.Context) (*sql.Conn, error) {
	if b.conn == nil {
		return nil, &Error{Code: XAERRMFail, Resource: b.r.name, Op: "exec", Err: sql.ErrConnDone}
	}
	if err := b.baseline(ctx); err != nil {
		return nil, err
	}
	return b.conn, nil
}

func (b *mysqlBranch) exec(ctx context.Context, query string, args []any) (int64, error) {
	if b.conn != nil && b.countable(query, args) {
		res, err := b.conn.ExecContext(ctx, query, args...)
		if err != nil {
			return 0, err
		}
		n, err := res.RowsAffected()
		b.counted(n)
		return n, err
	}
	n, err := execOn(ctx, b, query, args)
	if n > 0 {
		b.wrote = true
	}
	return n, err
}

// execOn runs a statement on bc's connection (its transaction begun) and returns the rows it
// affected.
func execOn(ctx context.Context, bc branchConn, query string, args []any) (int64, error) {
	conn, err := bc.db(ctx)
	if err != nil {
		return 0, err
	}
	res, err := conn.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
func (b *mysqlBranch) publish(msgs []broker.TxMessage) error {
	return fmt.Errorf("resource %s is not a broker", b.r.name)
}

func (b *mysqlBranch) xa(ctx context.Context, stmt, op string) error {
	if b.conn == nil {
		return &Error{Code: XAERRMFail, Resource: b.r.name, Op: op, Err: sql.ErrConnDone}
	}
	_, err := b.conn.ExecContext(ctx, stmt)
	return b.r.err(op, err)
}

func (b *mysqlBranch) prepare(ctx context.Context) (bool, error) {
	if b.conn == nil {
		return false, &Error{Code: XAERRMFail, Resource: b.r.name, Op: "prepare", Err: sql.ErrConnDone}
	}
	ro, err := b.readOnly(ctx)
	if err != nil {
		return false, err
	}
	if ro {
		if err := b.finishReadOnly(ctx); err != nil {
			return false, err
		}
		return true, nil
	}
	if b.multi {
		if err := b.xa(ctx, "XA END "+b.lit+"; XA PREPARE "+b.lit, "prepare"); err != nil {
			// Which of the two failed is not known: rollback tries XA END again and
			// accepts that the branch had already ended.
			b.endUnknown = true
			return false, err
		}
		b.ended, b.prepared = true, true
		return false, nil
	}
	if err := b.xa(ctx, "XA END "+b.lit, "prepare"); err != nil {
		return false, err
	}
	b.ended = true
	if err := b.xa(ctx, "XA PREPARE "+b.lit, "prepare"); err != nil {
		return false, err
	}
	b.prepared = true
	return false, nil
}

func (b *mysqlBranch) commit(ctx context.Context, onePhase bool) ([]broker.TopicPosition, error) {
	if onePhase {
		if !b.ended {
			if err := b.xa(ctx, "XA END "+b.lit, "commit"); err != nil {
				return nil, err
			}
			b.ended = true
		}
		return nil, b.xa(ctx, "XA COMMIT "+b.lit+" ONE PHASE", "commit")
	}
	return nil, b.xa(ctx, "XA COMMIT "+b.lit, "commit")
}

func (b *mysqlBranch) rollback(ctx context.Context) error {
	if !b.ended {
		err := b.xa(ctx, "XA END "+b.lit, "rollback")
		// XAER_RMFAIL after a failed combined end-and-prepare: the branch had ended (IDLE).
		if err != nil && !isRollbackCode(XACode(err)) && !(b.endUnknown && mysqlErrNumber(err) == 1399) {
			return err
		}
		b.ended = true
	}
	return b.xa(ctx, "XA ROLLBACK "+b.lit, "rollback")
}

func (b *mysqlBranch) release(broken bool) {
	if b.conn == nil {
		return
	}
	if broken {
		// Returning driver.ErrBadConn makes database/sql discard the connection.
		_ = b.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	b.conn.Close()
	b.conn = nil
}

// mysqlErrNumber is the server's error number of err, 0 if err is not a server error.
func mysqlErrNumber(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}
