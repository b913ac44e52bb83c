package offsetdb

import (
	"context"
	"fmt"
)

// CommitTx writes offsets inside the caller's database/sql transaction, for
// transactional consume: the handler's side effects and the offset commit
// are committed together or not at all. dialect is "postgres" (a *sql.Tx of
// github.com/jackc/pgx/v5/stdlib) or "mysql". The statement is the one the
// stores use: the stored offset becomes the greater one, rows in key order.
// tx may also be a *sql.DB or *sql.Conn (then it autocommits).
func CommitTx(ctx context.Context, tx Execer, dialect string, offsets []Offset) error {
	rows, err := Coalesce(offsets)
	if err != nil || len(rows) == 0 {
		return err
	}
	switch (Config{Store: dialect}).kind() {
	case KindPostgres:
		if _, err := tx.ExecContext(ctx, pgUpsert, pgArrays(rows)...); err != nil {
			return fmt.Errorf("offsetdb: commit %d offsets in transaction: %w", len(rows), err)
		}
		return nil
	case KindMySQL:
		return mysqlUpsert(ctx, tx, rows)
	default:
		return fmt.Errorf("offsetdb: CommitTx: dialect %q is not postgres or mysql", dialect)
	}
}
