package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/spf13/cobra"

	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/outbox"
)

func newOutboxCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "outbox",
		Short: "Run a transactional outbox relay on its own, or create the outbox tables",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("outbox needs a subcommand: relay or migrate")
		},
	}
	cmd.AddCommand(newOutboxRelayCmd(a), newOutboxMigrateCmd(a))
	return cmd
}

type outboxFlags struct {
	configPath string
	sources    []string
	name       string
	driver     string
	dsn        string
	table      string
	mode       string
	batch      int
	migrate    bool
	logLevel   string
}

func newOutboxRelayCmd(a *app) *cobra.Command {
	var f outboxFlags
	cmd := &cobra.Command{
		Use:   "relay",
		Short: "Relay outbox tables to a broker over HTTP (--server)",
		Long: `Relay one or more outbox sources into the broker at --server (or IMAGO_SERVER), over the HTTP
API, until SIGINT or SIGTERM. The sources come from a configuration file (--config: its outbox
and resources sections; --source picks some by name) or from --name, --driver, --dsn and
--table for a single source.

Any number of relays may run for one source (in 'imago serve' processes or here): one holds the
source's database lock and relays, the others wait and take over within a second when it dies, or within about 16 s when it hangs (its database session times out).
Every batch is published with idempotency keys derived from the source name and row ids, so a
relay killed between publishing and deleting never makes a second copy visible.`,
		Example: `  imago outbox relay --server http://127.0.0.1:8080 --name orders --driver postgres \
      --dsn "postgres://app@127.0.0.1:5432/shop" --migrate
  imago outbox relay --config imago.yaml --source orders`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(a.stderr, f.logLevel)
			if err != nil {
				return &usageError{err}
			}
			opts, err := outboxRelayOptions(f)
			if err != nil {
				return err
			}
			return runOutboxRelays(cmd.Context(), a, f, opts, logger)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.configPath, "config", "", "configuration file whose outbox and resources sections name the sources")
	fl.StringSliceVar(&f.sources, "source", nil, "with --config: relay only these sources (default all)")
	fl.StringVar(&f.name, "name", "", "without --config: the source name (keys its lock, state row and idempotency keys)")
	fl.StringVar(&f.driver, "driver", "", "without --config: postgres or mysql (also mariadb)")
	fl.StringVar(&f.dsn, "dsn", "", "without --config: the database DSN (prefer IMAGO_OUTBOX_DSN: it may hold a password)")
	fl.StringVar(&f.table, "table", "", "outbox table (default imago.outbox in PostgreSQL, imago_outbox in MySQL)")
	fl.StringVar(&f.mode, "mode", "delete", "what to do with published rows: delete or mark (stamp relayed_at)")
	fl.IntVar(&f.batch, "batch", 1000, "rows per batch")
	fl.BoolVar(&f.migrate, "migrate", false, "create or update the outbox tables first (migrations.ApplyOutbox)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	return cmd
}

// outboxRelayOptions resolves the sources to relay from the flags.
func outboxRelayOptions(f outboxFlags) ([]outbox.Options, error) {
	mode := outbox.Mode(f.mode)
	if mode != outbox.ModeDelete && mode != outbox.ModeMark {
		return nil, usagef("--mode %q: want delete or mark", f.mode)
	}
	if f.batch < 1 {
		return nil, usagef("--batch %d: want at least 1", f.batch)
	}
	var out []outbox.Options
	if f.configPath == "" {
		if f.dsn == "" {
			f.dsn = envOr("IMAGO_OUTBOX_DSN", "")
		}
		if f.name == "" || f.driver == "" || f.dsn == "" {
			return nil, usagef("give --config, or --name, --driver and --dsn (or IMAGO_OUTBOX_DSN)")
		}
		out = append(out, outbox.Options{Name: f.name, Dialect: f.driver, DSN: f.dsn, Table: f.table})
	} else {
		cfg, err := config.Load(f.configPath)
		if err != nil {
			return nil, &usageError{err}
		}
		want := map[string]bool{}
		for _, s := range f.sources {
			want[s] = true
		}
		for _, src := range cfg.Outbox {
			if len(want) > 0 && !want[src.Name] {
				continue
			}
			delete(want, src.Name)
			o, err := outboxOptions(cfg, src)
			if err != nil {
				return nil, &usageError{err}
			}
			if f.table != "" {
				o.Table = f.table
			}
			out = append(out, o)
		}
		for s := range want {
			return nil, usagef("--source %s: no such source in %s", s, f.configPath)
		}
		if len(out) == 0 {
			return nil, usagef("%s has no outbox sources", f.configPath)
		}
	}
	for i := range out {
		out[i].Mode, out[i].BatchSize = mode, f.batch
	}
	return out, nil
}

func runOutboxRelays(ctx context.Context, a *app, f outboxFlags, opts []outbox.Options, logger *slog.Logger) error {
	if f.migrate {
		for _, o := range opts {
			if err := applyOutboxMigrations(ctx, o.Dialect, o.DSN); err != nil {
				return err
			}
		}
	}
	pub := outbox.ClientPublisher{C: a.client()}
	var relays []*outbox.Relay
	for _, o := range opts {
		o.Logger = logger
		r, err := outbox.New(o, pub)
		if err != nil {
			return &usageError{err}
		}
		relays = append(relays, r)
	}
	logger.Info("outbox relay starting", "server", a.server, "sources", len(relays))
	errs := make([]error, len(relays))
	var wg sync.WaitGroup
	for i, r := range relays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.Run(ctx)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if errors.Is(err, context.Canceled) {
			errs[i] = nil
		}
	}
	return errors.Join(errs...)
}

// applyOutboxMigrations creates or updates the outbox tables of the database dsn of driver
// (postgres or mysql, also mariadb).
func applyOutboxMigrations(ctx context.Context, driver, dsn string) error {
	dialect, err := migrateDialect(driver, dsn)
	if err != nil {
		return err
	}
	db, where, err := openMigrateDB(dialect, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrations.ApplyOutbox(ctx, db, dialect); err != nil {
		return fmt.Errorf("outbox migrations of %s: %w", where, err)
	}
	return nil
}

func newOutboxMigrateCmd(a *app) *cobra.Command {
	var driver, dsn string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Create or update the outbox tables in an application database",
		Long: `Create or update imago.outbox and imago.outbox_relay (PostgreSQL; writers send no NOTIFY) or
imago_outbox and imago_outbox_relay (MySQL/MariaDB). Idempotent; safe to run from several
processes at once.`,
		Example: `  IMAGO_OUTBOX_DSN="postgres://app@127.0.0.1:5432/shop" imago outbox migrate --driver postgres`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dsn == "" {
				dsn = envOr("IMAGO_OUTBOX_DSN", "")
			}
			if driver == "" || dsn == "" {
				return usagef("give --driver and --dsn (or IMAGO_OUTBOX_DSN)")
			}
			if err := applyOutboxMigrations(cmd.Context(), driver, dsn); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "outbox tables are up to date")
			return nil
		},
	}
	cmd.Flags().StringVar(&driver, "driver", "", "postgres or mysql (also mariadb)")
	cmd.Flags().StringVar(&dsn, "dsn", "", "the database DSN (prefer IMAGO_OUTBOX_DSN: it may hold a password)")
	return cmd
}

// envOr returns the variable's value, or def when it is unset or empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
