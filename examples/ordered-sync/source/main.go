// Command source is the source side of the ordered-sync example: it changes rows of the
// accounts table in MySQL/MariaDB and, in the same transaction as each change, writes the
// row's new image to the outbox, keyed by the table and primary key ("accounts/acct-1"). The
// relay of imago serve publishes the changes to sync.accounts: one key, one partition, in the
// order they were committed.
//
//	go run ./examples/ordered-sync/source [-dsn 'root@tcp(127.0.0.1:3306)/test'] [-server http://127.0.0.1:8080] [-accounts 3] [-rounds 4]
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	_ "github.com/go-sql-driver/mysql"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/outbox"
)

// Topic carries the row changes.
const Topic = "sync.accounts"

// Change is one row change as the sink receives it: the row's image after the change (or its
// key, for a delete) and its version, which grows by one with every change of the row, across
// deletes (a row that comes back goes on from the version of its delete).
type Change struct {
	Table   string `json:"table"`
	Op      string `json:"op"` // "upsert" or "delete"
	ID      string `json:"id"`
	Balance int64  `json:"balance"`
	Version int64  `json:"version"`
}

func main() {
	dsn := flag.String("dsn", "root@tcp(127.0.0.1:3306)/test", "MySQL/MariaDB DSN of the source database")
	server := flag.String("server", "http://127.0.0.1:8080", "Imago HTTP address (to create the topic)")
	accounts := flag.Int("accounts", 3, "accounts to change")
	rounds := flag.Int("rounds", 4, "changes per account (the last account is then deleted)")
	flag.Parse()
	if err := run(context.Background(), *dsn, *server, *accounts, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "source:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, dsn, server string, accounts, rounds int) error {
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := migrations.ApplyOutbox(ctx, db, "mysql"); err != nil {
		return fmt.Errorf("create the outbox tables: %w", err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS accounts (
		id VARCHAR(32) PRIMARY KEY, balance BIGINT NOT NULL, version BIGINT NOT NULL) ENGINE=InnoDB`); err != nil {
		return fmt.Errorf("create the accounts table: %w", err)
	}
	// A row's version outlives the row: a deleted row that comes back goes on from the version
	// of its delete, as the sink's tombstone expects (restarting at 1 would stop the sink).
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS account_versions (
		id VARCHAR(32) PRIMARY KEY, version BIGINT NOT NULL) ENGINE=InnoDB`); err != nil {
		return fmt.Errorf("create the account_versions table: %w", err)
	}
	if _, err := client.New(server).CreateTopic(ctx, Topic, client.TopicConfig{Partitions: 3}); err != nil {
		return fmt.Errorf("create topic %s: %w", Topic, err)
	}
	w, err := outbox.NewWriter("mysql", outbox.DefaultMySQLTable)
	if err != nil {
		return err
	}
	changes := 0
	for r := 1; r <= rounds; r++ {
		for a := 1; a <= accounts; a++ {
			id := fmt.Sprintf("acct-%d", a)
			c, err := change(ctx, db, w, id, int64(r*a*100))
			if err != nil {
				return err
			}
			changes++
			fmt.Printf("source: %s v%d balance=%d\n", id, c.Version, c.Balance)
		}
	}
	last := fmt.Sprintf("acct-%d", accounts)
	c, err := remove(ctx, db, w, last)
	if err != nil {
		return err
	}
	changes++
	fmt.Printf("source: %s v%d deleted\n", last, c.Version)
	fmt.Printf("source: %d changes committed with their outbox rows\n", changes)
	return nil
}

// change adds delta to the account's balance (creating it) and writes the new row image to the
// outbox, in one transaction.
func change(ctx context.Context, db *sql.DB, w *outbox.Writer, id string, delta int64) (Change, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return Change{}, err
	}
	defer tx.Rollback()
	c := Change{Table: "accounts", Op: "upsert", ID: id}
	if c.Version, err = nextVersion(ctx, tx, id); err != nil {
		return Change{}, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO accounts (id, balance, version) VALUES (?, ?, ?)
		ON DUPLICATE KEY UPDATE balance = balance + VALUES(balance), version = VALUES(version)`, id, delta, c.Version); err != nil {
		return Change{}, fmt.Errorf("change %s: %w", id, err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE id = ?`, id).Scan(&c.Balance); err != nil {
		return Change{}, fmt.Errorf("read %s: %w", id, err)
	}
	return c, publish(ctx, tx, w, c)
}

// remove deletes the account and writes the delete to the outbox, in one transaction.
func remove(ctx context.Context, db *sql.DB, w *outbox.Writer, id string) (Change, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return Change{}, err
	}
	defer tx.Rollback()
	c := Change{Table: "accounts", Op: "delete", ID: id}
	if c.Version, err = nextVersion(ctx, tx, id); err != nil {
		return Change{}, err
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM accounts WHERE id = ?`, id)
	if err != nil {
		return Change{}, fmt.Errorf("delete %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return Change{}, fmt.Errorf("delete %s: %d rows (%v), want 1", id, n, err)
	}
	return c, publish(ctx, tx, w, c)
}

// nextVersion counts one more change of the row in account_versions and returns its version.
// The counter survives the row's delete, and its row lock, taken first by every change of the
// row, orders the row's changes (and their outbox rows) as their versions.
func nextVersion(ctx context.Context, tx *sql.Tx, id string) (int64, error) {
	if _, err := tx.ExecContext(ctx, `INSERT INTO account_versions (id, version) VALUES (?, 1)
		ON DUPLICATE KEY UPDATE version = version + 1`, id); err != nil {
		return 0, fmt.Errorf("version of %s: %w", id, err)
	}
	var v int64
	if err := tx.QueryRowContext(ctx, `SELECT version FROM account_versions WHERE id = ?`, id).Scan(&v); err != nil {
		return 0, fmt.Errorf("version of %s: %w", id, err)
	}
	return v, nil
}

func publish(ctx context.Context, tx *sql.Tx, w *outbox.Writer, c Change) error {
	payload, _ := json.Marshal(c)
	if err := w.WriteSQL(ctx, tx, outbox.Message{Topic: Topic, Key: c.Table + "/" + c.ID, Payload: payload}); err != nil {
		return fmt.Errorf("outbox %s: %w", c.ID, err)
	}
	return tx.Commit()
}
