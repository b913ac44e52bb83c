package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/spf13/cobra"

	"github.com/imagomq/imago/migrations"
)

func newMigrateCmd(a *app) *cobra.Command {
	var (
		dsn, driver, output string
	)
	cmd := &cobra.Command{
		Use:   "migrate --dsn DSN [--driver postgres|mysql]",
		Short: "Create or update Imago's tables (offsets, partition ends, lag view) in a database",
		Long: `Apply Imago's embedded SQL migrations to a PostgreSQL or MySQL/MariaDB database: the
consumer offset table, the partition ends the broker keeps current, and the consumer lag view,
every table and column commented for DBAs. In PostgreSQL they live in schema imago
(imago.consumer_offsets, imago.partition_ends, imago.consumer_lag); in MySQL/MariaDB they are
prefixed imago_ (imago_consumer_offsets, ...).

The command is idempotent and safe to run from several processes at once (a database lock
serializes the runs). 'imago serve' applies the same migrations at start-up when its offset
store is a database, and a transactional consumer applies them to the application's database
unless told not to; run this command when the application's database user may not run DDL.

--driver is guessed from the DSN when absent: postgres:// or postgresql:// URLs and
key=value strings are PostgreSQL, user@tcp(host:port)/db strings are MySQL. The DSN may come
from IMAGO_OFFSETS_DSN so that its password stays out of the command line.`,
		Example: `  imago migrate --dsn "postgres://postgres@127.0.0.1:5432/payments?sslmode=disable"
  imago migrate --dsn "root@tcp(127.0.0.1:3306)/payments" --driver mysql
  IMAGO_OFFSETS_DSN="postgres://imago:secret@db:5432/payments" imago migrate -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if dsn == "" {
				dsn = os.Getenv("IMAGO_OFFSETS_DSN")
			}
			if dsn == "" {
				return usagef("migrate needs --dsn (or IMAGO_OFFSETS_DSN)")
			}
			dialect, err := migrateDialect(driver, dsn)
			if err != nil {
				return err
			}
			db, where, err := openMigrateDB(dialect, dsn)
			if err != nil {
				return err
			}
			defer db.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 6*time.Minute)
			defer cancel()
			if err := db.PingContext(ctx); err != nil {
				return fmt.Errorf("connect to %s: %w", where, err)
			}
			if err := migrations.Apply(ctx, db, dialect); err != nil {
				return fmt.Errorf("migrate %s: %w", where, err)
			}
			var version int64
			q := "SELECT COALESCE(MAX(version_id), 0) FROM " + migrations.VersionTable[dialect] + " WHERE is_applied"
			if err := db.QueryRowContext(ctx, q).Scan(&version); err != nil {
				return fmt.Errorf("read the migration version of %s: %w", where, err)
			}
			if output == "json" {
				return printJSON(a.stdout, map[string]any{"dialect": dialect, "database": where, "version": version})
			}
			fmt.Fprintf(a.stdout, "%s database %s is at migration version %d\n", dialect, where, version)
			return nil
		},
	}
	cmd.Flags().StringVar(&dsn, "dsn", "", "database to migrate (default $IMAGO_OFFSETS_DSN)")
	cmd.Flags().StringVar(&driver, "driver", "", "postgres or mysql (MariaDB too); guessed from the DSN when absent")
	addOutputFlag(cmd, &output)
	return cmd
}

// migrateDialect returns the migrations dialect of driver, or the one the DSN's shape shows.
func migrateDialect(driver, dsn string) (string, error) {
	if d, ok := migrations.Dialect(driver); ok {
		return d, nil
	} else if driver != "" {
		return "", usagef("--driver %q: want postgres or mysql", driver)
	}
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return migrations.Postgres, nil
	case strings.Contains(dsn, "@tcp(") || strings.Contains(dsn, "@unix("):
		return migrations.MySQL, nil
	case strings.Contains(dsn, "host=") || strings.Contains(dsn, "dbname="):
		return migrations.Postgres, nil
	}
	return "", usagef("cannot tell the database kind from the DSN: add --driver postgres or --driver mysql")
}

// openMigrateDB opens dsn and returns a description of the server without the password.
func openMigrateDB(dialect, dsn string) (*sql.DB, string, error) {
	if dialect == migrations.Postgres {
		pc, err := pgx.ParseConfig(dsn)
		if err != nil {
			// The parse error may quote the DSN, password included: do not wrap it.
			return nil, "", usagef("--dsn is not a PostgreSQL URL or key=value string")
		}
		where := fmt.Sprintf("%s@%s:%d/%s", pc.User, pc.Host, pc.Port, pc.Database)
		return stdlib.OpenDB(*pc), where, nil
	}
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, "", usagef("--dsn is not a MySQL DSN (user:password@tcp(host:port)/database)")
	}
	if mc.Timeout == 0 {
		mc.Timeout = 10 * time.Second
	}
	where := fmt.Sprintf("%s@%s/%s", mc.User, mc.Addr, mc.DBName)
	conn, err := mysql.NewConnector(mc)
	if err != nil {
		return nil, "", fmt.Errorf("mysql %s: %w", where, err)
	}
	return sql.OpenDB(conn), where, nil
}
