package migrations

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// TestMySQLMigrationLockIsPerDatabase: GET_LOCK names are server-wide, so the migration lock
// carries the database. A run in one database holding it does not hold up a run in another
// database of the same server, and still holds up a run in its own database.
func TestMySQLMigrationLockIsPerDatabase(t *testing.T) {
	ctx := context.Background()
	driver, dsnA := freshDatabase(t, MySQL)
	_, dsnB := freshDatabase(t, MySQL)
	a, b := openDB(t, driver, dsnA), openDB(t, driver, dsnB)

	// Hold database A's migration lock as a running Apply would.
	held, err := a.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	unlock, err := lock(ctx, held, MySQL)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	// Another database of the same server: no wait.
	bctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := Apply(bctx, b, MySQL); err != nil {
		t.Fatalf("Apply in another database while database A's migration lock is held: %v", err)
	}

	// The same database: the lock is taken.
	c, err := a.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg, _ := mysql.ParseDSN(dsnA)
	var free sql.NullInt64
	if err := c.QueryRowContext(ctx, `SELECT IS_FREE_LOCK(?)`, mysqlLockName(cfg.DBName)).Scan(&free); err != nil {
		t.Fatal(err)
	}
	if !free.Valid || free.Int64 != 0 {
		t.Fatalf("IS_FREE_LOCK of database A's migration lock = %v while held; want 0", free)
	}
	actx, cancel2 := context.WithTimeout(ctx, 2*time.Second)
	defer cancel2()
	if err := Apply(actx, a, MySQL); err == nil {
		t.Fatal("Apply in database A ran while its migration lock was held")
	}
}

// TestMySQLLockNameFitsGetLock: names stay within GET_LOCK's 64 characters and differ per
// database.
func TestMySQLLockNameFitsGetLock(t *testing.T) {
	long := "d_" + "0123456789012345678901234567890123456789012345678901234567890"
	for _, db := range []string{"", "imago", long, long + "x"} {
		if n := mysqlLockName(db); len(n) > 64 {
			t.Errorf("mysqlLockName(%q) = %q: %d characters", db, n, len(n))
		}
	}
	if mysqlLockName("a") == mysqlLockName("b") || mysqlLockName(long) == mysqlLockName(long+"x") {
		t.Error("two databases share a lock name")
	}
}
