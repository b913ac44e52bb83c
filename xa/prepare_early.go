package xa

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// Preparing a branch with its last statement. A caller that knows a statement is the last one
// of its branch, in a transaction that will commit in two phases, can save the round trip of
// the branch's PREPARE: ExecPrepare sends the statement and the PREPARE together where the
// driver can pipeline them (PostgreSQL: BEGIN if not sent yet, the statement and PREPARE
// TRANSACTION in one pipeline, one round trip). MySQL/MariaDB through go-sql-driver cannot
// pipeline a prepared statement with XA END and XA PREPARE, so there ExecPrepare is Exec and
// the branch prepares at Commit as before.
//
// The rules of a PREPARE hold as at Commit: a failed decision log refuses it (ExecPrepare is
// then a plain Exec, and Commit rolls the transaction back with decision_log_failed), and the
// "preparing" record is queued first. A branch prepared early is a prepared branch from then
// on: it takes no more statements, never commits in one phase, and a rollback of its
// transaction (a later step that fails, its expected row count not met, the timeout) writes
// the rollback decision durably before ROLLBACK PREPARED, as for any prepared branch; a crash
// leaves it to recovery like a branch prepared at Commit. The price of preparing early is
// paid only when the transaction then rolls back (a PREPARE and a durable rollback record).

// maxEarlyTexts bounds the distinct statements ExecPrepare keeps prepared on the connections of
// one PostgreSQL resource (each connection keeps those it ran, for its life): the named
// operations of the HTTP API are a fixed set well below it. A statement past it runs as Exec,
// and its branch prepares at Commit.
const maxEarlyTexts = 256

// earlyTexts is the set of statements a resource's ExecPrepare prepared on its connections.
type earlyTexts struct {
	mu    sync.Mutex
	texts map[string]bool
}

// admit reports whether query may be kept prepared (it is, or there is room for it).
func (e *earlyTexts) admit(query string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.texts[query] {
		return true
	}
	if len(e.texts) >= maxEarlyTexts {
		return false
	}
	if e.texts == nil {
		e.texts = map[string]bool{}
	}
	e.texts[query] = true
	return true
}

// earlyPreparer is a branchConn that can run its last statement and prepare in one round trip.
type earlyPreparer interface {
	// execPrepare runs the statement and prepares the branch. prepared reports whether the
	// branch may be prepared (true also when the outcome is unknown: the connection failed).
	execPrepare(ctx context.Context, query string, args []any) (n int64, prepared bool, err error)
}

// ExecPrepare runs the branch's last statement, like Exec, and prepares the branch in the same
// round trip where the resource's driver allows it (see above). Call it only when the
// transaction will commit in two phases: another branch has work (or will have), or the
// transaction has a client id. The branch takes no statement after it.
func (b *Branch) ExecPrepare(ctx context.Context, query string, args ...any) (int64, error) {
	t := b.tx
	t.mu.Lock()
	defer t.mu.Unlock()
	sctx, cancel := t.stmtCtx(ctx)
	defer cancel()
	if err := b.startSQL(sctx); err != nil {
		return 0, err
	}
	ep, ok := b.conn.(earlyPreparer)
	if !ok || t.markPreparing() != nil {
		n, err := b.conn.exec(sctx, query, args)
		if err != nil {
			return 0, b.noteErr(sctx, err)
		}
		return n, nil
	}
	n, prepared, err := ep.execPrepare(sctx, query, args)
	if prepared {
		b.prepared = true
		t.c.setBranch(b.bs, BranchPrepared)
	}
	if prepared && err != nil {
		// Whether it is prepared is not known: the connection is dropped (which detaches a
		// prepared branch); the rollback decision, durable first, lets recovery roll it back.
		b.broken = true
	}
	if err != nil {
		return 0, b.noteErr(sctx, err)
	}
	return n, nil
}

// execPrepare sends BEGIN (unless sent), the statement and PREPARE TRANSACTION in one pipeline
// and one Sync. The statement runs as a prepared statement the connection keeps (prepared on
// its first use there, one round trip more then), its arguments bound. When the statement
// fails, the server skips the PREPARE: the transaction is left aborted, for the rollback. When
// PREPARE TRANSACTION fails, PostgreSQL has rolled the transaction back.
func (b *pgBranch) execPrepare(ctx context.Context, query string, args []any) (int64, bool, error) {
	if b.conn == nil {
		return 0, false, &Error{Code: XAERRMFail, Resource: b.r.name, Op: "exec", Err: sql.ErrConnDone}
	}
	if !pipelineArgs(args) || !b.r.early.admit(query) {
		n, err := b.exec(ctx, query, args)
		return n, false, err
	}
	b.wrote = true
	var n int64
	var prepared bool
	err := b.conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("resource %s: the database/sql driver is %T, want pgx (github.com/jackc/pgx/v5/stdlib)", b.r.name, dc)
		}
		conn := c.Conn()
		// Named by its text: kept by the connection, as pgx keeps the statements of Exec.
		sd, err := conn.Prepare(ctx, query, query)
		if err != nil {
			return b.connErr(conn, err)
		}
		var eqb pgx.ExtendedQueryBuilder
		if err := eqb.Build(conn.TypeMap(), sd, args); err != nil {
			return err
		}
		queries := 2
		pl := conn.PgConn().StartPipeline(ctx)
		if !b.begun {
			pl.SendQueryParams("BEGIN", nil, nil, nil, nil)
			queries++
		}
		pl.SendQueryPrepared(sd.Name, eqb.ParamValues, eqb.ParamFormats, eqb.ResultFormats)
		pl.SendQueryParams("PREPARE TRANSACTION "+b.lit, nil, nil, nil, nil)
		// From here a transaction may be open (or prepared): the rollback ends it (ROLLBACK
		// of no transaction is harmless).
		b.begun = true
		tags, perr := pipelineTags(pl, queries)
		if cerr := pl.Close(); perr == nil {
			perr = cerr
		}
		if len(tags) >= queries-1 {
			n = tags[queries-2].RowsAffected()
		}
		if perr != nil {
			var pe *pgconn.PgError
			if !errors.As(perr, &pe) || pe.Severity == "FATAL" || pe.Severity == "PANIC" || conn.PgConn().IsClosed() {
				// The connection failed, or the server ended the session (pg_terminate_backend's
				// FATAL 57P01, a shutdown): its error may follow a PREPARE TRANSACTION that ran
				// (it replaces the pipeline's ReadyForQuery), so whether the branch is prepared
				// is not known.
				prepared = true
				return b.connErr(conn, perr)
			}
			if pe.Code == "0A000" || pe.Code == "26000" {
				// The kept statement is no longer usable (its result type changed, or the
				// session lost it): the connection is dropped with it, and with the aborted
				// transaction.
				return errors.Join(perr, driver.ErrBadConn)
			}
			return perr
		}
		if len(tags) != queries || tags[queries-1].String() != "PREPARE TRANSACTION" {
			// PREPARE TRANSACTION of a failed transaction answers ROLLBACK.
			return &Error{Code: XARBRollback, Resource: b.r.name, Op: "prepare", Err: fmt.Errorf("PREPARE TRANSACTION answered %v: the transaction had failed", tags)}
		}
		prepared = true
		return nil
	})
	b.prepared = prepared
	return n, prepared, err
}

// pipelineTags sends Sync and reads the command tags of queries results, stopping at the first
// error (the server skips the rest until Sync).
func pipelineTags(pl *pgconn.Pipeline, queries int) ([]pgconn.CommandTag, error) {
	if err := pl.Sync(); err != nil {
		return nil, err
	}
	var tags []pgconn.CommandTag
	for len(tags) < queries {
		res, err := pl.GetResults()
		if err != nil {
			return tags, err
		}
		rr, ok := res.(*pgconn.ResultReader)
		if !ok {
			return tags, fmt.Errorf("pipeline: got %T, want the result of a query", res)
		}
		tag, err := rr.Close()
		if err != nil {
			return tags, err
		}
		tags = append(tags, tag)
	}
	return tags, nil
}

// connErr adds driver.ErrBadConn to err when the connection is closed, so that database/sql
// discards it.
func (b *pgBranch) connErr(conn *pgx.Conn, err error) error {
	if conn.PgConn().IsClosed() {
		return errors.Join(err, driver.ErrBadConn)
	}
	return err
}
