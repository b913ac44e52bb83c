package migrations

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"sync"
	"testing"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/imagomq/imago/internal/testenv"
)

// freshDatabase creates a database of its own for the test (the migrations
// create fixed names, and other test packages use the shared test database
// at the same time) and returns a DSN for it. The database is dropped after.
func freshDatabase(t *testing.T, dialect string) (driver, dsn string) {
	t.Helper()
	ctx := context.Background()
	name := fmt.Sprintf("imago_mig_%x", rand.Uint32())
	var adminDriver, adminDSN string
	switch dialect {
	case Postgres:
		adminDriver, adminDSN = "pgx", testenv.PostgresDSN(t)
		u, err := url.Parse(adminDSN)
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/" + name
		dsn = u.String()
	case MySQL:
		adminDriver, adminDSN = "mysql", testenv.MySQLDSN(t)
		c, err := mysql.ParseDSN(adminDSN)
		if err != nil {
			t.Fatal(err)
		}
		c.DBName = name
		c.ParseTime = true
		dsn = c.FormatDSN()
	}
	admin, err := sql.Open(adminDriver, adminDSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		drop := "DROP DATABASE IF EXISTS " + name
		if dialect == Postgres {
			drop += " WITH (FORCE)"
		}
		if _, err := admin.ExecContext(context.Background(), drop); err != nil {
			t.Logf("%s: %v", drop, err)
		}
		admin.Close()
	})
	return adminDriver, dsn
}

func openDB(t *testing.T, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// applyConcurrentlyThenAgain applies from two processes' worth of
// connection pools at once, then once more: no error, same result.
func applyConcurrentlyThenAgain(t *testing.T, driver, dsn, dialect string) *sql.DB {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Apply(ctx, openDB(t, driver, dsn), dialect)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent apply: %v", err)
		}
	}
	db := openDB(t, driver, dsn)
	if err := Apply(ctx, db, dialect); err != nil {
		t.Fatalf("second apply: %v", err)
	}
	return db
}

func TestApplyPostgres(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	driver, dsn := freshDatabase(t, Postgres)
	db := applyConcurrentlyThenAgain(t, driver, dsn, Postgres)

	var versions int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM imago.goose_version WHERE version_id > 0`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if want := countMigrations(t, Postgres); versions != want {
		t.Errorf("imago.goose_version records %d applied migrations, want %d (each applied once)", versions, want)
	}
	// Every table, view and column is commented.
	wantCols := map[string][]string{
		"consumer_offsets": {"group_name", "topic", "partition", "next_offset", "committed_at", "committed_by"},
		"partition_ends":   {"topic", "partition", "end_offset", "updated_at"},
		"consumer_lag":     {"group_name", "topic", "partition", "next_offset", "end_offset", "lag", "committed_at"},
	}
	for rel, cols := range wantCols {
		var comment sql.NullString
		if err := db.QueryRowContext(ctx, `SELECT obj_description(('imago.' || $1)::regclass, 'pg_class')`, rel).Scan(&comment); err != nil {
			t.Fatal(err)
		}
		if comment.String == "" {
			t.Errorf("imago.%s has no comment", rel)
		}
		rows, err := db.QueryContext(ctx, `
			SELECT c.column_name, coalesce(col_description(('imago.' || $1)::regclass, c.ordinal_position::int), '')
			  FROM information_schema.columns c
			 WHERE c.table_schema = 'imago' AND c.table_name = $1 ORDER BY c.ordinal_position`, rel)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for rows.Next() {
			var col, comment string
			if err := rows.Scan(&col, &comment); err != nil {
				t.Fatal(err)
			}
			got = append(got, col)
			if comment == "" {
				t.Errorf("column imago.%s.%s has no comment", rel, col)
			}
		}
		rows.Close()
		if fmt.Sprint(got) != fmt.Sprint(cols) {
			t.Errorf("imago.%s columns %v, want %v", rel, got, cols)
		}
	}
	checkLag(t, db, Postgres)
}

func TestApplyMySQL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	driver, dsn := freshDatabase(t, MySQL)
	db := applyConcurrentlyThenAgain(t, driver, dsn, MySQL)

	var versions int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM imago_goose_version WHERE version_id > 0`).Scan(&versions); err != nil {
		t.Fatal(err)
	}
	if want := countMigrations(t, MySQL); versions != want {
		t.Errorf("imago_goose_version records %d applied migrations, want %d", versions, want)
	}
	for _, table := range []string{"imago_consumer_offsets", "imago_partition_ends"} {
		var comment string
		if err := db.QueryRowContext(ctx, `SELECT table_comment FROM information_schema.tables
			WHERE table_schema = DATABASE() AND table_name = ?`, table).Scan(&comment); err != nil {
			t.Fatal(err)
		}
		if comment == "" {
			t.Errorf("%s has no comment", table)
		}
		var missing sql.NullString
		if err := db.QueryRowContext(ctx, `SELECT GROUP_CONCAT(column_name) FROM information_schema.columns
			WHERE table_schema = DATABASE() AND table_name = ? AND column_comment = ''`, table).Scan(&missing); err != nil {
			t.Fatal(err)
		}
		if missing.String != "" {
			t.Errorf("%s: columns without comment: %s", table, missing.String)
		}
	}
	var view string
	if err := db.QueryRowContext(ctx, `SELECT table_type FROM information_schema.tables
		WHERE table_schema = DATABASE() AND table_name = 'imago_consumer_lag'`).Scan(&view); err != nil || view != "VIEW" {
		t.Fatalf("imago_consumer_lag: %q %v", view, err)
	}
	checkLag(t, db, MySQL)
}

// checkLag fills offsets and ends and reads the lag view.
func checkLag(t *testing.T, db *sql.DB, dialect string) {
	t.Helper()
	ctx := context.Background()
	offsets, ends, lag := "imago.consumer_offsets", "imago.partition_ends", "imago.consumer_lag"
	part, ph := "partition", func(i int) string { return fmt.Sprintf("$%d", i) }
	if dialect == MySQL {
		offsets, ends, lag = "imago_consumer_offsets", "imago_partition_ends", "imago_consumer_lag"
		part, ph = "`partition`", func(int) string { return "?" }
	}
	ins := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	insOff := fmt.Sprintf("INSERT INTO %s (group_name, topic, %s, next_offset, committed_by) VALUES (%s,%s,%s,%s,'test')",
		offsets, part, ph(1), ph(2), ph(3), ph(4))
	ins(insOff, "pay", "orders", 0, 900)
	ins(insOff, "pay", "orders", 1, 50)
	ins(insOff, "pay", "orders", 2, 10) // no end reported
	ins(insOff, "audit", "orders", 0, 1000)
	insEnd := fmt.Sprintf("INSERT INTO %s (topic, %s, end_offset) VALUES (%s,%s,%s)", ends, part, ph(1), ph(2), ph(3))
	ins(insEnd, "orders", 0, 1000)
	ins(insEnd, "orders", 1, 2000)

	rows, err := db.QueryContext(ctx, fmt.Sprintf("SELECT group_name, topic, %s, next_offset, end_offset, lag, committed_at FROM %s ORDER BY group_name, %s", part, lag, part))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var g, topic string
		var p int
		var next, end, l sql.NullInt64
		var at any
		if err := rows.Scan(&g, &topic, &p, &next, &end, &l, &at); err != nil {
			t.Fatal(err)
		}
		lagS := "NULL"
		if l.Valid {
			lagS = fmt.Sprint(l.Int64)
		}
		nextS := "NULL"
		if next.Valid {
			nextS = fmt.Sprint(next.Int64)
		}
		got = append(got, fmt.Sprintf("%s/%s/%d next=%s lag=%s", g, topic, p, nextS, lagS))
	}
	want := []string{
		"audit/orders/0 next=1000 lag=0",
		"audit/orders/1 next=NULL lag=2000", // never committed on partition 1: behind by all of it
		"pay/orders/0 next=900 lag=100",
		"pay/orders/1 next=50 lag=1950",
		"pay/orders/2 next=10 lag=NULL",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("lag view:\n got %v\nwant %v", got, want)
	}
}

func TestFS(t *testing.T) {
	for _, d := range []string{Postgres, MySQL} {
		if _, err := FS(d); err != nil {
			t.Error(err)
		}
	}
	if _, err := FS("oracle"); err == nil {
		t.Error("FS(oracle) succeeded")
	}
}

// countMigrations is the number of migration files of dialect.
func countMigrations(t *testing.T, dialect string) int {
	t.Helper()
	fsys, err := FS(dialect)
	if err != nil {
		t.Fatal(err)
	}
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("no migrations for %s: %v", dialect, err)
	}
	return len(names)
}
