package xa

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib" // also registers the "pgx" database/sql driver

	"github.com/imagomq/imago/broker"
)

// OpenPostgresDB opens a pool of the pgx driver on dsn, which is parsed first: an error names
// no part of the DSN. The driver's parse error quotes the DSN with the password masked only in
// the forms it recognises ("password = secret" with spaces, or a URL password holding an
// unescaped "@", show through), and a pool opened on a DSN it cannot parse returns that error
// from every connection attempt, into the logs. OpenResource and `imago serve` use it.
func OpenPostgresDB(dsn string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("cannot parse the PostgreSQL DSN (the driver's reason is not shown: it quotes the DSN, password included)")
	}
	return stdlib.OpenDB(*cfg), nil
}

// Postgres makes a PostgreSQL database an XA resource. db must use the pgx driver
// (github.com/jackc/pgx/v5/stdlib, driver name "pgx"). The caller keeps ownership of db.
// At the first enlistment the server's max_prepared_transactions is checked: with 0,
// PREPARE TRANSACTION is refused, so the resource is too.
func Postgres(name string, db *sql.DB) Resource {
	return &pgRM{sqlRM: sqlRM{name: name, sqldb: db}}
}

type pgRM struct {
	sqlRM
	early earlyTexts // the statements ExecPrepare keeps prepared on the connections
}

func (r *pgRM) Driver() string      { return "postgres" }
func (r *pgRM) rm() resourceManager { return r }

// check refuses a server with max_prepared_transactions = 0. A success is remembered.
func (r *pgRM) check(ctx context.Context) error {
	return r.checkOnce(ctx, "SHOW max_prepared_transactions", func(v string) error {
		if n, _ := strconv.Atoi(v); n <= 0 {
			return fmt.Errorf("%w: PostgreSQL has max_prepared_transactions = %s, so it refuses PREPARE TRANSACTION; "+
				"set it above 0 (at least the number of concurrent global transactions, e.g. 64) with "+
				"`ALTER SYSTEM SET max_prepared_transactions = 64` or in postgresql.conf, then restart PostgreSQL",
				ErrUnsupportedServer, v)
		}
		return nil
	})
}

func (r *pgRM) start(ctx context.Context, xid Xid, _ time.Duration) (branchConn, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	lit, err := pgLiteral(pgGID(xid))
	if err != nil {
		return nil, &Error{Code: XAERInval, Resource: r.name, Op: "start", Err: err}
	}
	conn, err := r.sqldb.Conn(ctx)
	if err != nil {
		return nil, r.err("start", err)
	}
	// BEGIN is not sent yet: it travels with the branch's first statement (see exec).
	return &pgBranch{r: r, lit: lit, conn: conn}, nil
}

func (r *pgRM) finish(ctx context.Context, xid Xid, verb, op string) error {
	lit, err := pgLiteral(pgGID(xid))
	if err != nil {
		return &Error{Code: XAERInval, Resource: r.name, Op: op, Err: err}
	}
	_, err = r.sqldb.ExecContext(ctx, verb+" "+lit)
	return r.phase2Err(op, err)
}

// phase2Err classifies the error of COMMIT PREPARED or ROLLBACK PREPARED. SQLSTATE 57014
// (query_canceled: a cancel request, a statement timeout) means the statement did not run to
// its end: the branch is still prepared, which is XAER_RMFAIL (try again), not the rollback
// 57014 means for a statement inside a transaction.
func (r *pgRM) phase2Err(op string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "57014" {
		return &Error{Code: XAERRMFail, Resource: r.name, Op: op, Err: fmt.Errorf("cancelled; the branch is still prepared: %w", err)}
	}
	return r.err(op, err)
}

func (r *pgRM) commit(ctx context.Context, xid Xid) error {
	return r.finish(ctx, xid, "COMMIT PREPARED", "commit")
}

func (r *pgRM) rollback(ctx context.Context, xid Xid) error {
	return r.finish(ctx, xid, "ROLLBACK PREPARED", "rollback")
}

// recover lists this database's prepared transactions of Imago's format (pg_prepared_xacts
// shows every database's; COMMIT PREPARED must run in the right one).
func (r *pgRM) recover(ctx context.Context) ([]Xid, error) {
	return r.recoverRows(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE $1",
		[]any{pgGIDPrefix + "%"}, func(rows *sql.Rows) (Xid, bool, error) {
			var gid string
			if err := rows.Scan(&gid); err != nil {
				return Xid{}, false, err
			}
			x, ok := parsePGGID(gid)
			return x, ok, nil
		})
}

// pgBranch is one transaction on its pinned connection until PREPARE TRANSACTION (after
// which PostgreSQL detaches it from the session). The transaction begins with the branch's
// first statement: exec sends BEGIN and the statement in one round trip (a pipeline), and a
// branch that ran nothing has no transaction at all (it votes rdonly at prepare).
type pgBranch struct {
	r        *pgRM
	lit      string
	conn     *sql.Conn
	begun    bool // BEGIN was sent
	wrote    bool // exec was called (a query alone may still write: checked at prepare)
	prepared bool
}

// db begins the transaction if needed and returns the connection.
func (b *pgBranch) db(ctx context.Context) (*sql.Conn, error) {
	if b.conn == nil {
		return nil, &Error{Code: XAERRMFail, Resource: b.r.name, Op: "exec", Err: sql.ErrConnDone}
	}
	if !b.begun {
		if _, err := b.simple(ctx, "BEGIN", "exec"); err != nil {
			return nil, err
		}
		b.begun = true
	}
	return b.conn, nil
}

// exec runs a statement in the branch. The first one goes out in one pipeline with BEGIN;
// its parameters stay bound parameters (pgx's extended protocol, statements cached per
// connection as database/sql's pgx driver does).
func (b *pgBranch) exec(ctx context.Context, query string, args []any) (int64, error) {
	if b.conn == nil {
		return 0, &Error{Code: XAERRMFail, Resource: b.r.name, Op: "exec", Err: sql.ErrConnDone}
	}
	b.wrote = true
	if b.begun || !pipelineArgs(args) {
		return execOn(ctx, b, query, args)
	}
	var n int64
	err := b.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("resource %s: the database/sql driver is %T, want pgx (github.com/jackc/pgx/v5/stdlib)", b.r.name, dc)
		}
		batch := &pgx.Batch{}
		batch.Queue("BEGIN")
		batch.Queue(query, args...)
		br := c.Conn().SendBatch(ctx, batch)
		_, berr := br.Exec()
		if berr == nil {
			b.begun = true
			var tag pgconn.CommandTag
			tag, berr = br.Exec()
			n = tag.RowsAffected()
		}
		if cerr := br.Close(); berr == nil {
			berr = cerr
		}
		if berr != nil {
			// A failed statement after BEGIN leaves the transaction open (aborted).
			b.begun = b.begun || c.Conn().PgConn().TxStatus() != 'I'
			if c.Conn().PgConn().IsClosed() {
				return errors.Join(berr, driver.ErrBadConn)
			}
		}
		return berr
	})
	return n, err
}

// pipelineArgs reports whether args can go to pgx directly (database/sql's named arguments
// and output parameters cannot).
func pipelineArgs(args []any) bool {
	for _, a := range args {
		switch a.(type) {
		case sql.NamedArg, sql.Out:
			return false
		}
	}
	return true
}
func (b *pgBranch) publish(msgs []broker.TxMessage) error {
	return fmt.Errorf("resource %s is not a broker", b.r.name)
}

// simple runs one statement through pgconn and returns its command tag: PostgreSQL answers
// PREPARE TRANSACTION and COMMIT of a failed transaction with the tag ROLLBACK, not an error.
func (b *pgBranch) simple(ctx context.Context, stmt, op string) (tag string, err error) {
	if b.conn == nil {
		return "", &Error{Code: XAERRMFail, Resource: b.r.name, Op: op, Err: sql.ErrConnDone}
	}
	err = b.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("resource %s: the database/sql driver is %T, want pgx (github.com/jackc/pgx/v5/stdlib)", b.r.name, dc)
		}
		res := c.Conn().PgConn().Exec(ctx, stmt)
		results, rerr := res.ReadAll()
		if rerr != nil {
			if c.Conn().PgConn().IsClosed() {
				return errors.Join(rerr, driver.ErrBadConn)
			}
			return rerr
		}
		if len(results) > 0 {
			tag = results[len(results)-1].CommandTag.String()
		}
		return nil
	})
	return tag, b.r.err(op, err)
}

func (b *pgBranch) txStatus() byte {
	var st byte
	if b.conn == nil {
		return 0
	}
	_ = b.conn.Raw(func(dc any) error {
		if c, ok := dc.(*stdlib.Conn); ok {
			st = c.Conn().PgConn().TxStatus()
		}
		return nil
	})
	return st
}

func (b *pgBranch) prepare(ctx context.Context) (bool, error) {
	if !b.begun {
		return true, nil // nothing ran: no transaction, nothing to prepare
	}
	switch st := b.txStatus(); st {
	case 'T':
	case 'E':
		return false, &Error{Code: XARBRollback, Resource: b.r.name, Op: "prepare",
			Err: errors.New("a statement of the branch failed, so PostgreSQL aborted the transaction")}
	case 'I':
		// A statement ended the transaction (COMMIT, ROLLBACK): what ran before it is
		// committed or rolled back outside the global transaction, and what ran after it
		// ran in autocommit. Nothing is left to prepare; the global transaction must not
		// count this branch as done.
		return false, &Error{Code: XARBRollback, Resource: b.r.name, Op: "prepare",
			Err: errors.New("the branch's transaction was ended by one of its statements (COMMIT or ROLLBACK run by the application's SQL); a branch's SQL must not end its transaction")}
	default:
		return false, &Error{Code: XAERRMFail, Resource: b.r.name, Op: "prepare",
			Err: fmt.Errorf("the connection's transaction status is %q, want T (in a transaction block)", st)}
	}
	if !b.wrote {
		// Only queries ran: a transaction without an xid wrote nothing and votes rdonly.
		var assigned sql.NullString
		if err := b.conn.QueryRowContext(ctx, "SELECT txid_current_if_assigned()::text").Scan(&assigned); err != nil {
			return false, b.r.err("prepare", err)
		}
		if !assigned.Valid {
			tag, err := b.simple(ctx, "COMMIT", "prepare")
			if err != nil {
				return false, err
			}
			if tag != "COMMIT" {
				return false, &Error{Code: XARBRollback, Resource: b.r.name, Op: "prepare", Err: fmt.Errorf("COMMIT answered %s", tag)}
			}
			return true, nil
		}
	}
	tag, err := b.simple(ctx, "PREPARE TRANSACTION "+b.lit, "prepare")
	if err != nil {
		return false, err
	}
	if tag != "PREPARE TRANSACTION" {
		return false, &Error{Code: XARBRollback, Resource: b.r.name, Op: "prepare",
			Err: fmt.Errorf("PREPARE TRANSACTION answered %s: the transaction had failed", tag)}
	}
	b.prepared = true
	return false, nil
}

func (b *pgBranch) commit(ctx context.Context, onePhase bool) ([]broker.TopicPosition, error) {
	if !onePhase {
		_, err := b.simple(ctx, "COMMIT PREPARED "+b.lit, "commit")
		return nil, b.r.phase2Err("commit", err)
	}
	if !b.begun {
		return nil, nil
	}
	tag, err := b.simple(ctx, "COMMIT", "commit")
	if err != nil {
		return nil, err
	}
	if tag != "COMMIT" {
		return nil, &Error{Code: XARBRollback, Resource: b.r.name, Op: "commit", Err: fmt.Errorf("COMMIT answered %s: the transaction had failed", tag)}
	}
	return nil, nil
}

func (b *pgBranch) rollback(ctx context.Context) error {
	if b.prepared {
		_, err := b.simple(ctx, "ROLLBACK PREPARED "+b.lit, "rollback")
		return b.r.phase2Err("rollback", err)
	}
	if !b.begun {
		return nil
	}
	_, err := b.simple(ctx, "ROLLBACK", "rollback")
	return err
}

func (b *pgBranch) release(broken bool) {
	if b.conn == nil {
		return
	}
	if broken {
		_ = b.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	b.conn.Close()
	b.conn = nil
}
