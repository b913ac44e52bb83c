package xa

import (
	"context"
	"strings"
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
// Whether the branch changed anything. The session's handler counters (Handler_write,
// Handler_update, Handler_delete) count every row the server inserted, changed or deleted,
// which is also what makes MariaDB prepare a branch for real (an UPDATE that leaves a row as
// it was counts nothing, and prepares nothing either). Reading them costs a query on
// information_schema.SESSION_STATUS (about 0.2 ms of server time), so it is avoided where the
// answer is known without it:
//
//   - a single statement with arguments, on a pool of OpenMySQLDB (a server-side prepared
//     statement: exactly one statement, CALL aside), that affected a row certainly wrote:
//     the branch is prepared, nothing is read (the usual debit or credit);
//   - every other statement (a query, a statement without arguments, which may be several,
//     a CALL, any statement on a pool from sql.Open) is preceded by one read of the counters
//     (the baseline, once per branch) unless the branch already wrote; at prepare, equal
//     counters mean nothing changed;
//   - a countable statement that affected no row before any baseline (a trigger of an INSERT
//     IGNORE may still have written) leaves the answer unknown: the branch is prepared as
//     before.
//
// The counters err only towards "changed" (writes to temporary tables count too), which
// prepares the branch as before. InnoDB's own count (information_schema.INNODB_TRX.
// trx_rows_modified) is not used: that table is a cache refreshed at most every 100 ms, so it
// can show a transaction as it was before its writes.
const handlerWritesQuery = "SELECT CAST(SUM(VARIABLE_VALUE) AS SIGNED) FROM information_schema.SESSION_STATUS " +
	"WHERE VARIABLE_NAME IN ('HANDLER_WRITE', 'HANDLER_UPDATE', 'HANDLER_DELETE')"

// begin runs setup (mysql_session.go) and XA START, in one round trip when the pool allows
// several statements per text.
func (b *mysqlBranch) begin(ctx context.Context, setup string) error {
	if b.multi {
		_, err := b.conn.ExecContext(ctx, setup+"; XA START "+b.lit)
		return err
	}
	for _, q := range []string{setup, "XA START " + b.lit} {
		if _, err := b.conn.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// countable reports whether exec can tell from the rows query affects whether it wrote.
func (b *mysqlBranch) countable(query string, args []any) bool {
	return b.multi && len(args) > 0 && !isCall(query)
}

// isCall reports whether query is a CALL (whose affected rows are only its last statement's).
func isCall(query string) bool {
	q := strings.TrimLeft(query, " \t\r\n(")
	for strings.HasPrefix(q, "/*") || strings.HasPrefix(q, "#") || strings.HasPrefix(q, "-- ") {
		end := "\n"
		if strings.HasPrefix(q, "/*") {
			end = "*/"
		}
		i := strings.Index(q, end)
		if i < 0 {
			return true // only a comment: say CALL, the safe answer
		}
		q = strings.TrimLeft(q[i+len(end):], " \t\r\n(")
	}
	return len(q) >= 4 && strings.EqualFold(q[:4], "call")
}

// counted notes a countable statement that affected n rows.
func (b *mysqlBranch) counted(n int64) {
	switch {
	case n > 0:
		b.wrote = true
	case !b.baselined:
		b.unknown = true
	}
}

// baseline reads the handler counters once, before the first statement that needs them.
func (b *mysqlBranch) baseline(ctx context.Context) error {
	if b.wrote || b.unknown || b.baselined {
		return nil
	}
	if err := b.conn.QueryRowContext(ctx, handlerWritesQuery).Scan(&b.writes0); err != nil {
		return b.r.err("exec", err)
	}
	b.baselined = true
	return nil
}

// readOnly reports whether the branch's transaction certainly changed no row. The branch is
// active.
func (b *mysqlBranch) readOnly(ctx context.Context) (bool, error) {
	switch {
	case b.wrote || b.unknown:
		return false, nil
	case !b.baselined:
		return true, nil // no statement ran (a countable one sets wrote or unknown)
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
