package outbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/imagomq/imago/migrations"
)

// Dialects.
const (
	Postgres = "postgres"
	MySQL    = "mysql"
)

// Default outbox tables created by migrations.ApplyOutbox.
const (
	DefaultPostgresTable = "imago.outbox"
	DefaultMySQLTable    = "imago_outbox"
)

// Message is one message to publish from the outbox.
type Message struct {
	// Topic is the destination topic (^[A-Za-z0-9._-]{1,249}$).
	Topic string
	// Key chooses the partition and defines per-key order; empty means no key.
	Key string
	// Headers are sent with the message; nil for none.
	Headers map[string]string
	// Payload is the message value (raw bytes).
	Payload []byte
}

var topicRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,249}$`)
var tableRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// ValidTable reports whether name is an acceptable outbox table name: an identifier, optionally
// qualified by a schema (PostgreSQL) or database (MySQL).
func ValidTable(name string) bool { return tableRE.MatchString(name) }

// Writer writes outbox rows into one table of one dialect. The zero value is not usable; use
// NewWriter. A Writer is safe for concurrent use.
type Writer struct {
	dialect string
	table   string
}

// NewWriter returns a writer for table (empty: the dialect's default table).
func NewWriter(dialect, table string) (*Writer, error) {
	d, ok := migrations.Dialect(dialect)
	if !ok {
		return nil, fmt.Errorf("outbox: unknown dialect %q (want %q or %q)", dialect, Postgres, MySQL)
	}
	dialect = d
	if table == "" {
		table = DefaultPostgresTable
		if dialect == MySQL {
			table = DefaultMySQLTable
		}
	}
	if !ValidTable(table) {
		return nil, fmt.Errorf("outbox: table name %q: want an identifier, optionally schema-qualified", table)
	}
	return &Writer{dialect: dialect, table: table}, nil
}

var (
	defaultPG    = &Writer{dialect: Postgres, table: DefaultPostgresTable}
	defaultMySQL = &Writer{dialect: MySQL, table: DefaultMySQLTable}
)

// Write inserts msgs into the default outbox table inside tx, the application's transaction:
// the messages are published if and only if tx commits. tx is a pgx.Tx, or a *sql.Tx on
// PostgreSQL (pgx's stdlib driver) or MySQL/MariaDB (go-sql-driver/mysql). For a *sql.Tx the
// dialect is found with one extra query (SELECT version()); a Writer from NewWriter avoids it.
func Write(ctx context.Context, tx any, msgs ...Message) error {
	switch t := tx.(type) {
	case pgx.Tx:
		return defaultPG.WritePgx(ctx, t, msgs...)
	case *sql.Tx:
		var v string
		if err := t.QueryRowContext(ctx, `SELECT version()`).Scan(&v); err != nil {
			return fmt.Errorf("outbox: find the database dialect: %w", err)
		}
		if strings.Contains(v, "PostgreSQL") {
			return defaultPG.WriteSQL(ctx, t, msgs...)
		}
		return defaultMySQL.WriteSQL(ctx, t, msgs...)
	default:
		return fmt.Errorf("outbox: Write takes a pgx.Tx or a *sql.Tx, got %T", tx)
	}
}

// Write inserts msgs inside tx, which is a pgx.Tx or a *sql.Tx of the writer's dialect.
func (w *Writer) Write(ctx context.Context, tx any, msgs ...Message) error {
	switch t := tx.(type) {
	case pgx.Tx:
		if w.dialect != Postgres {
			return errors.New("outbox: a pgx.Tx needs a postgres writer")
		}
		return w.WritePgx(ctx, t, msgs...)
	case *sql.Tx:
		return w.WriteSQL(ctx, t, msgs...)
	default:
		return fmt.Errorf("outbox: Write takes a pgx.Tx or a *sql.Tx, got %T", tx)
	}
}

// WritePgx inserts msgs inside a pgx transaction.
func (w *Writer) WritePgx(ctx context.Context, tx pgx.Tx, msgs ...Message) error {
	if len(msgs) == 0 {
		return nil
	}
	q, args, err := w.insert(msgs)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, q, args...); err != nil {
		return fmt.Errorf("outbox: insert %d rows into %s: %w", len(msgs), w.table, err)
	}
	return nil
}

// WriteSQL inserts msgs inside a database/sql transaction.
func (w *Writer) WriteSQL(ctx context.Context, tx *sql.Tx, msgs ...Message) error {
	if len(msgs) == 0 {
		return nil
	}
	q, args, err := w.insert(msgs)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("outbox: insert %d rows into %s: %w", len(msgs), w.table, err)
	}
	return nil
}

// maxRowsPerInsert keeps a statement's bound parameters under PostgreSQL's 65535.
const maxRowsPerInsert = 10000

// insert builds one multi-row INSERT with bound parameters.
func (w *Writer) insert(msgs []Message) (string, []any, error) {
	if len(msgs) > maxRowsPerInsert {
		return "", nil, fmt.Errorf("outbox: %d messages in one Write; at most %d", len(msgs), maxRowsPerInsert)
	}
	var b strings.Builder
	if w.dialect == Postgres {
		b.WriteString("INSERT INTO " + w.table + " (topic, key, headers, payload) VALUES ")
	} else {
		b.WriteString("INSERT INTO " + w.table + " (topic, `key`, headers, payload) VALUES ")
	}
	args := make([]any, 0, 4*len(msgs))
	for i, m := range msgs {
		if !topicRE.MatchString(m.Topic) {
			return "", nil, fmt.Errorf("outbox: message %d: topic %q: want ^[A-Za-z0-9._-]{1,249}$", i, m.Topic)
		}
		var key, headers any
		if m.Key != "" {
			key = m.Key
		}
		if len(m.Headers) > 0 {
			h, err := json.Marshal(m.Headers)
			if err != nil {
				return "", nil, fmt.Errorf("outbox: message %d: headers: %w", i, err)
			}
			headers = string(h)
		}
		payload := m.Payload
		if payload == nil {
			payload = []byte{}
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if w.dialect == Postgres {
			n := len(args)
			fmt.Fprintf(&b, "($%d, $%d, $%d::jsonb, $%d)", n+1, n+2, n+3, n+4)
		} else {
			b.WriteString("(?, ?, ?, ?)")
		}
		args = append(args, m.Topic, key, headers, payload)
	}
	return b.String(), args, nil
}

// decodeHeaders parses a headers column (a JSON object of strings).
func decodeHeaders(s string) (map[string]string, error) {
	if s == "" || s == "null" {
		return nil, nil
	}
	var h map[string]string
	if err := json.Unmarshal([]byte(s), &h); err != nil {
		return nil, fmt.Errorf("headers %q: want a JSON object of strings: %w", s, err)
	}
	return h, nil
}
