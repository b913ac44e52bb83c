package xa

import (
	"context"
	"testing"
)

// A statement's row count is the rows it matched on both databases: an UPDATE that sets a row
// to the values it already holds counts it, as PostgreSQL does, so an operation's expect_rows
// means the same on MariaDB (whose default counts only rows changed).
func TestRowsMatchedOnBothDatabases(t *testing.T) {
	e := newEnv(t)
	name := e.tables(map[string]int64{"A": 100})
	c := e.open(e.options("00000000000000a1"))
	var my, pg int64
	_, err := c.Run(context.Background(), BeginOptions{}, func(ctx context.Context, tx *GlobalTx) error {
		wb, err := tx.Enlist(ctx, "wallet")
		if err != nil {
			return err
		}
		lb, err := tx.Enlist(ctx, "ledger")
		if err != nil {
			return err
		}
		if my, err = wb.Exec(ctx, "UPDATE "+name+" SET balance = 100 WHERE id = ?", "A"); err != nil {
			return err
		}
		pg, err = lb.Exec(ctx, "UPDATE "+name+" SET balance = 100 WHERE id = $1", "A")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if my != 1 || pg != 1 {
		t.Errorf("rows affected by an UPDATE to the same value: MariaDB %d, PostgreSQL %d; want 1 and 1", my, pg)
	}
}
