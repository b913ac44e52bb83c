// Command sink is the target side of the ordered-sync example: a transactional consumer that
// applies the row changes of sync.accounts to the table accounts_replica of a PostgreSQL
// database. Each change and the consumer's offset are committed in one transaction of that
// database (client.TxConsumer), so every change takes effect exactly once, through crashes and
// restarts. The row's version must be the stored one plus one: a change out of order stops the
// sink (dead letters are off).
//
//	go run ./examples/ordered-sync/sink [-dsn postgres://...] [-server http://127.0.0.1:8080] [-until 13]
package main

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/imagomq/imago/client"
)

type change struct {
	Table   string `json:"table"`
	Op      string `json:"op"`
	ID      string `json:"id"`
	Balance int64  `json:"balance"`
	Version int64  `json:"version"`
}

func main() {
	dsn := flag.String("dsn", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL URL of the target database")
	server := flag.String("server", "http://127.0.0.1:8080", "Imago HTTP address")
	until := flag.Int64("until", 0, "stop once this many changes are applied in the target (0: run until interrupted)")
	flag.Parse()
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(sig, *dsn, *server, *until); err != nil {
		fmt.Fprintln(os.Stderr, "sink:", err)
		os.Exit(1)
	}
}

func run(parent context.Context, dsn, server string, until int64) error {
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	// applied counts the changes applied to each row: exactly once means it equals the version.
	if _, err := db.ExecContext(parent, `CREATE TABLE IF NOT EXISTS accounts_replica (
		id text PRIMARY KEY, balance bigint NOT NULL, version bigint NOT NULL, applied bigint NOT NULL,
		deleted boolean NOT NULL DEFAULT false)`); err != nil {
		return fmt.Errorf("create accounts_replica: %w", err)
	}
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	if until > 0 {
		go stopWhenApplied(ctx, cancel, db, until)
	}
	tc := client.NewTxConsumer(client.New(server), "accounts-sync", []string{"sync.accounts"}, db, "postgres",
		client.ConsumerDeadLetter(false))
	err = tc.Run(ctx, func(ctx context.Context, tx *sql.Tx, m client.FetchedMessage) error {
		raw := []byte(m.Value)
		if m.ValueBase64 != nil {
			raw, _ = base64.StdEncoding.DecodeString(*m.ValueBase64)
		}
		var c change
		if err := json.Unmarshal(raw, &c); err != nil {
			return fmt.Errorf("offset %d: %w", m.Offset, err)
		}
		var stored int64
		switch err := tx.QueryRowContext(ctx, `SELECT version FROM accounts_replica WHERE id = $1 FOR UPDATE`, c.ID).Scan(&stored); {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		}
		if c.Version != stored+1 {
			return fmt.Errorf("%s: change v%d after v%d: out of order", c.ID, c.Version, stored)
		}
		// Deletes are kept as tombstones (deleted = true) so that the version check still
		// holds if the row comes back.
		if _, err := tx.ExecContext(ctx, `INSERT INTO accounts_replica (id, balance, version, applied, deleted)
			VALUES ($1, $2, $3, 1, $4)
			ON CONFLICT (id) DO UPDATE SET balance = EXCLUDED.balance, version = EXCLUDED.version,
				applied = accounts_replica.applied + 1, deleted = EXCLUDED.deleted`,
			c.ID, c.Balance, c.Version, c.Op == "delete"); err != nil {
			return err
		}
		what := fmt.Sprintf("balance=%d", c.Balance)
		if c.Op == "delete" {
			what = "deleted"
		}
		fmt.Printf("sink: %s v%d %s (p%d@%d, offset committed in the same transaction)\n", c.ID, c.Version, what, m.Partition, m.Offset)
		return nil
	})
	if err != nil && ctx.Err() == nil {
		return err
	}
	var n, rows int64
	if err := db.QueryRowContext(parent, `SELECT coalesce(sum(applied), 0), count(*) FILTER (WHERE NOT deleted) FROM accounts_replica`).Scan(&n, &rows); err != nil {
		return err
	}
	fmt.Printf("sink: %d changes applied, %d rows in accounts_replica\n", n, rows)
	return nil
}

// stopWhenApplied ends the sink once the target holds until changes (read from the committed
// table, so nothing is cut in the middle of a transaction).
func stopWhenApplied(ctx context.Context, cancel context.CancelFunc, db *sql.DB, until int64) {
	for {
		var n int64
		if err := db.QueryRowContext(ctx, `SELECT coalesce(sum(applied), 0) FROM accounts_replica`).Scan(&n); err == nil && n >= until {
			cancel()
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}
