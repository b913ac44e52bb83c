package migrations

import (
	"context"
	"database/sql"
	"testing"
)

// applySets are the three migration sets with their Apply function and version table.
func applySets(dialect string) []struct {
	name  string
	apply func(ctx context.Context, db *sql.DB, dialect string) error
	vt    string
} {
	return []struct {
		name  string
		apply func(ctx context.Context, db *sql.DB, dialect string) error
		vt    string
	}{
		{"offsets", Apply, VersionTable[dialect]},
		{"xa", ApplyXA, XAVersionTable[dialect]},
		{"outbox", ApplyOutbox, OutboxVersionTable[dialect]},
	}
}

// TestEveryMigrationRerunsAfterItsVersionRowIsLost: MySQL and MariaDB commit DDL by
// themselves, so a crash between a migration's DDL and goose's version row leaves the change
// made and the version behind. Every migration of every set must then run again without error
// (here: for each version v, the rows of v and above are deleted, as if the run that applied v
// had crashed before recording it, and the set is applied again).
func TestEveryMigrationRerunsAfterItsVersionRowIsLost(t *testing.T) {
	ctx := context.Background()
	for _, d := range []string{Postgres, MySQL} {
		for _, s := range applySets(d) {
			t.Run(d+"/"+s.name, func(t *testing.T) {
				driver, dsn := freshDatabase(t, d)
				db := openDB(t, driver, dsn)
				if err := s.apply(ctx, db, d); err != nil {
					t.Fatal(err)
				}
				var versions []int64
				rows, err := db.QueryContext(ctx, `SELECT version_id FROM `+s.vt+` WHERE version_id > 0 ORDER BY version_id`)
				if err != nil {
					t.Fatal(err)
				}
				for rows.Next() {
					var v int64
					if err := rows.Scan(&v); err != nil {
						t.Fatal(err)
					}
					versions = append(versions, v)
				}
				if err := rows.Err(); err != nil {
					t.Fatal(err)
				}
				rows.Close()
				if len(versions) == 0 {
					t.Fatal("no version applied")
				}
				for _, v := range versions {
					del := `DELETE FROM ` + s.vt + ` WHERE version_id >= ?`
					if d == Postgres {
						del = `DELETE FROM ` + s.vt + ` WHERE version_id >= $1`
					}
					if _, err := db.ExecContext(ctx, del, v); err != nil {
						t.Fatal(err)
					}
					if err := s.apply(ctx, db, d); err != nil {
						t.Fatalf("apply again after the version row of %d was lost: %v", v, err)
					}
				}
				if d == MySQL && s.name == "outbox" {
					checkEpochColumn(t, db)
				}
			})
		}
	}
}

// TestEverySetRerunsAfterItsVersionTableIsDropped: the package comment promises that a
// database whose version table was dropped is brought up to date rather than failing, which
// means running every migration again over the schema it already made.
func TestEverySetRerunsAfterItsVersionTableIsDropped(t *testing.T) {
	ctx := context.Background()
	for _, d := range []string{Postgres, MySQL} {
		for _, s := range applySets(d) {
			t.Run(d+"/"+s.name, func(t *testing.T) {
				driver, dsn := freshDatabase(t, d)
				db := openDB(t, driver, dsn)
				if err := s.apply(ctx, db, d); err != nil {
					t.Fatal(err)
				}
				if _, err := db.ExecContext(ctx, `DROP TABLE `+s.vt); err != nil {
					t.Fatal(err)
				}
				if err := s.apply(ctx, db, d); err != nil {
					t.Fatalf("apply again after the version table was dropped: %v", err)
				}
				if d == MySQL && s.name == "outbox" {
					checkEpochColumn(t, db)
				}
			})
		}
	}
}

// checkEpochColumn: imago_outbox_relay has its epoch column, once, with its default.
func checkEpochColumn(t *testing.T, db *sql.DB) {
	t.Helper()
	var n int
	var def sql.NullString
	if err := db.QueryRowContext(context.Background(), `SELECT COUNT(*), MAX(COLUMN_DEFAULT) FROM information_schema.COLUMNS
		WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'imago_outbox_relay' AND COLUMN_NAME = 'epoch'`).Scan(&n, &def); err != nil {
		t.Fatal(err)
	}
	if n != 1 || def.String != "0" {
		t.Fatalf("epoch column: %d of them, default %v; want 1, 0", n, def)
	}
}
