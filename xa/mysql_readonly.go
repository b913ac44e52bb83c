package xa

import (
	"context"
	"errors"
)

// Read-only votes of MySQL/MariaDB branches. MariaDB 10.11 accepts XA PREPARE of a branch
// that changed no row and lists it in XA RECOVER, but it prepared nothing in InnoDB: while
// the preparing session lives, XA COMMIT there succeeds; once the session is gone (a crash, a
// dropped connection), XA COMMIT from any other session answers XA_RBROLLBACK (1402), which
// recovery must read as a heuristic rollback. So a branch that changed nothing is not
// prepared: it votes read-only and is finished at once (rolled back: it has nothing to
// commit, and its locks, SELECT … FOR UPDATE included, are released), as a PostgreSQL
// branch without a transaction id does.
//
// Whether the branch changed anything: a statement run through Exec that affected a row says
// yes without asking (the usual case costs nothing more at prepare). Otherwise the session's
// handler counters decide: Handler_write, Handler_update and Handler_delete count every row
// the server inserted, changed or deleted (an UPDATE that leaves a row as it was counts
// nothing, and InnoDB does not prepare it either). Their sum is read right after XA START
// (in the same round trip when the pool allows several statements per text) and again before
// XA END; equal sums mean nothing changed. The counters err only towards "changed" (writes to
// temporary tables count too), which prepares the branch as before. InnoDB's own count
// (information_schema.INNODB_TRX.trx_rows_modified) is not used: that table is a cache
// refreshed at most every 100 ms, so it can show a transaction as it was before its writes.
const handlerWritesQuery = "SELECT CAST(SUM(VARIABLE_VALUE) AS SIGNED) FROM information_schema.SESSION_STATUS " +
	"WHERE VARIABLE_NAME IN ('HANDLER_WRITE', 'HANDLER_UPDATE', 'HANDLER_DELETE')"

// begin runs setup (mysql_session.go), XA START, and reads the handler counters' baseline.
func (b *mysqlBranch) begin(ctx context.Context, setup string) error {
	if !b.multi {
		for _, q := range []string{setup, "XA START " + b.lit} {
			if _, err := b.conn.ExecContext(ctx, q); err != nil {
				return err
			}
		}
		return b.conn.QueryRowContext(ctx, handlerWritesQuery).Scan(&b.writes0)
	}
	rows, err := b.conn.QueryContext(ctx, setup+"; XA START "+b.lit+"; "+handlerWritesQuery)
	if err != nil {
		return err
	}
	defer rows.Close()
	for !rows.Next() { // the results of SET and XA START have no row; the query's comes last
		if !rows.NextResultSet() {
			if err := rows.Err(); err != nil {
				return err
			}
			return errors.New("XA START: no handler counters in the answer")
		}
	}
	if err := rows.Scan(&b.writes0); err != nil {
		return err
	}
	for rows.NextResultSet() {
	}
	return rows.Err()
}

// readOnly reports whether the branch's transaction changed no row. The branch is active.
func (b *mysqlBranch) readOnly(ctx context.Context) (bool, error) {
	if b.wrote {
		return false, nil
	}
	var n int64
	if err := b.conn.QueryRowContext(ctx, handlerWritesQuery).Scan(&n); err != nil {
		return false, b.r.err("prepare", err)
	}
	return n == b.writes0, nil
}

// finishReadOnly ends and rolls back a branch that voted read-only.
func (b *mysqlBranch) finishReadOnly(ctx context.Context) error {
	if b.multi {
		if err := b.xa(ctx, "XA END "+b.lit+"; XA ROLLBACK "+b.lit, "prepare"); err != nil {
			b.endUnknown = true
			return err
		}
		b.ended = true
		return nil
	}
	if err := b.xa(ctx, "XA END "+b.lit, "prepare"); err != nil {
		return err
	}
	b.ended = true
	return b.xa(ctx, "XA ROLLBACK "+b.lit, "prepare")
}
