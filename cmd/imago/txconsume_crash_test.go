package main

// Transactional consume crash test (issue 3, acceptance 4): a consumer process whose handler
// inserts one row per message into a real PostgreSQL table (run 1, pgx pool) and a real
// MariaDB table (run 2, database/sql), with its offsets committed in the same transaction
// (client.TxConsumer), is killed with SIGKILL mid-stream several times and restarted. The row
// table has NO unique key on the message, so nothing but the transactional offset can keep a
// message from being applied twice. At the end every message has exactly one row, and the
// offset stored in that database equals the number of rows of each partition.
//
//	go test ./cmd/imago -run TxConsumeCrash                    # 4 kills per database
//	go test ./cmd/imago -run TxConsumeCrash -txcrash.kills 20 -txcrash.messages 10000

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql" // database/sql driver "mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/migrations"
)

var (
	txCrashKills    = flag.Int("txcrash.kills", 4, "transactional consume crash test: SIGKILLs of the consumer per database")
	txCrashMessages = flag.Int("txcrash.messages", 2000, "transactional consume crash test: messages per database")
)

const txChildEnv = "IMAGO_TXCHILD"

// txChildConfig is what the parent tells the consumer child process.
type txChildConfig struct {
	Server  string `json:"server"`
	Driver  string `json:"driver"` // pgx (pgx pool), postgres (database/sql) or mysql
	DSN     string `json:"dsn"`
	Table   string `json:"table"`
	Group   string `json:"group"`
	Topic   string `json:"topic"`
	DelayMS int    `json:"delay_ms"`
}

// TestTxConsumeChild is the consumer process of TestTxConsumeCrash: the parent re-executes
// the test binary with -test.run=^TestTxConsumeChild$ and the configuration in IMAGO_TXCHILD.
// Without it, it does nothing.
func TestTxConsumeChild(t *testing.T) {
	raw := os.Getenv(txChildEnv)
	if raw == "" {
		t.Skip("the consumer child of TestTxConsumeCrash; runs only when started by it")
	}
	var cfg txChildConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	c := client.New(cfg.Server)
	opts := []client.ConsumerOption{
		client.ConsumerID("txchild"), // a restart replaces the killed member at once
		client.ConsumerSessionTimeout(5 * time.Second),
		client.ConsumerMaxMessages(40),
		client.ConsumerPollWait(200 * time.Millisecond),
		client.ConsumerConcurrency(4),
		client.ConsumerLogger(testLogger(t)),
	}
	delay := time.Duration(cfg.DelayMS) * time.Millisecond
	var err error
	switch cfg.Driver {
	case "pgx":
		pool, perr := pgxpool.New(ctx, cfg.DSN)
		if perr != nil {
			t.Fatal(perr)
		}
		defer pool.Close()
		insert := "INSERT INTO " + cfg.Table + " (topic, part, off, n) VALUES ($1, $2, $3, $4)"
		err = client.NewPgxTxConsumer(c, cfg.Group, []string{cfg.Topic}, pool, opts...).
			RunPgx(ctx, func(ctx context.Context, tx pgx.Tx, m client.FetchedMessage) error {
				time.Sleep(delay)
				_, err := tx.Exec(ctx, insert, m.Topic, m.Partition, m.Offset, msgN(t, m))
				return err
			})
	default:
		driver, dialect, insert := "pgx", migrations.Postgres, "INSERT INTO "+cfg.Table+" (topic, part, off, n) VALUES ($1, $2, $3, $4)"
		if cfg.Driver == "mysql" {
			driver, dialect, insert = "mysql", migrations.MySQL, "INSERT INTO "+cfg.Table+" (topic, part, off, n) VALUES (?, ?, ?, ?)"
		}
		db, oerr := sql.Open(driver, cfg.DSN)
		if oerr != nil {
			t.Fatal(oerr)
		}
		defer db.Close()
		err = client.NewTxConsumer(c, cfg.Group, []string{cfg.Topic}, db, dialect, opts...).
			Run(ctx, func(ctx context.Context, tx *sql.Tx, m client.FetchedMessage) error {
				time.Sleep(delay)
				_, err := tx.ExecContext(ctx, insert, m.Topic, m.Partition, m.Offset, msgN(t, m))
				return err
			})
	}
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
}

// txChild is a running consumer child process.
type txChild struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startTxChild(t *testing.T, cfg txChildConfig, logPath string) *txChild {
	t.Helper()
	raw, _ := json.Marshal(cfg)
	cmd := exec.Command(os.Args[0], "-test.run=^TestTxConsumeChild$", "-test.count=1")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IMAGO_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, txChildEnv+"="+string(raw))
	cmd.SysProcAttr = childSysProcAttr()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := &txChild{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(ch.done)
	}()
	t.Cleanup(func() { ch.signal(syscall.SIGKILL) })
	return ch
}

func (c *txChild) signal(sig syscall.Signal) {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(sig)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func TestTxConsumeCrash(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	for _, run := range []struct {
		name, driver string
		dsn          func(testing.TB) string
	}{
		{"postgres", "pgx", testenv.PostgresDSN},
		{"mariadb", "mysql", testenv.MySQLDSN},
	} {
		t.Run(run.name, func(t *testing.T) { txConsumeCrash(t, srv, run.driver, run.dsn(t)) })
	}
}

func txConsumeCrash(t *testing.T, srv *serverProc, driver, dsn string) {
	ctx := context.Background()
	const parts = 4
	total := *txCrashMessages
	c := srv.client()
	topic, group, table := uniqueName(t, "txc."), uniqueName(t, "txg"), uniqueName(t, "txc_rows_")
	if _, err := c.CreateTopic(ctx, topic, client.TopicConfig{Partitions: parts}); err != nil {
		t.Fatal(err)
	}
	produceN(t, c, topic, parts, 0, total)

	sqlDriver, dialect, ph := "pgx", migrations.Postgres, "$1"
	offsetTable := "imago.consumer_offsets"
	if driver == "mysql" {
		sqlDriver, dialect, ph = "mysql", migrations.MySQL, "?"
		offsetTable = "imago_consumer_offsets"
	}
	db, err := sql.Open(sqlDriver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := migrations.Apply(ctx, db, dialect); err != nil {
		t.Fatal(err)
	}
	// One row per applied message; deliberately no unique key on (topic, part, off).
	idType := "bigserial"
	if driver == "mysql" {
		idType = "BIGINT AUTO_INCREMENT"
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`CREATE TABLE %s (id %s PRIMARY KEY, topic VARCHAR(255) NOT NULL, part INT NOT NULL, off BIGINT NOT NULL, n INT NOT NULL)`, table, idType)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = db.Exec("DROP TABLE " + table)
		_, _ = db.Exec("DELETE FROM "+offsetTable+" WHERE group_name = "+ph, group)
	})
	rows := func() int {
		var n int
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
			t.Fatalf("count rows: %v", err)
		}
		return n
	}
	stored := func() int64 {
		var n sql.NullInt64
		if err := db.QueryRowContext(ctx, "SELECT SUM(next_offset) FROM "+offsetTable+" WHERE group_name = "+ph, group).Scan(&n); err != nil {
			t.Fatalf("sum offsets: %v", err)
		}
		return n.Int64
	}

	cfg := txChildConfig{Server: srv.URL, Driver: driver, DSN: dsn, Table: table, Group: group, Topic: topic, DelayMS: 1}
	logPath := t.TempDir() + "/consumer.log"
	defer func() {
		if t.Failed() {
			t.Logf("consumer log (%s), last lines:\n%s", logPath, tail(logPath, 60))
		}
	}()
	start := time.Now()
	kills := *txCrashKills
	child := startTxChild(t, cfg, logPath)
	for k := 1; k <= kills; k++ {
		// Kill somewhere in the k-th slice of the stream, at a random point.
		target := total*k/(kills+1) + rand.IntN(max(total/(kills+1)/2, 1))
		waitFor(t, 60*time.Second, fmt.Sprintf("%d rows before kill %d", target, k), func() bool { return rows() >= target })
		child.signal(syscall.SIGKILL)
		t.Logf("kill %d: SIGKILL at %d rows (%d offsets stored) after %v", k, rows(), stored(), time.Since(start).Round(time.Millisecond))
		child = startTxChild(t, cfg, logPath)
	}
	waitFor(t, 60*time.Second, "every message applied", func() bool { return stored() == int64(total) })
	child.signal(syscall.SIGTERM)
	t.Logf("%d messages, %d kills, done in %v", total, kills, time.Since(start).Round(time.Millisecond))

	// Every message exactly once.
	dup, err := db.QueryContext(ctx, "SELECT part, off, COUNT(*) FROM "+table+" GROUP BY part, off HAVING COUNT(*) <> 1 ORDER BY part, off")
	if err != nil {
		t.Fatal(err)
	}
	for dup.Next() {
		var p, n int
		var off int64
		if err := dup.Scan(&p, &off, &n); err != nil {
			t.Fatal(err)
		}
		t.Errorf("message %s/%d/%d applied %d times", topic, p, off, n)
	}
	dup.Close()
	if n := rows(); n != total {
		t.Errorf("%d rows for %d messages", n, total)
	}
	var distinct int
	if err := db.QueryRowContext(ctx, "SELECT COUNT(DISTINCT n) FROM "+table).Scan(&distinct); err != nil {
		t.Fatal(err)
	}
	if distinct != total {
		t.Errorf("%d distinct messages applied, want %d", distinct, total)
	}
	// The offset in the database equals the rows of each partition (and the partition's end).
	for p := range parts {
		var next int64
		var n int
		if err := db.QueryRowContext(ctx, "SELECT next_offset FROM "+offsetTable+" WHERE group_name = "+ph+
			" AND topic = "+strings.Replace(ph, "1", "2", 1)+" AND "+quotePartition(driver)+" = "+strings.Replace(ph, "1", "3", 1),
			group, topic, p).Scan(&next); err != nil {
			t.Fatalf("offset of partition %d: %v", p, err)
		}
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+table+" WHERE part = "+ph, p).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if next != int64(n) || n != total/parts {
			t.Errorf("partition %d: stored offset %d, rows %d, messages %d", p, next, n, total/parts)
		}
	}
}

func quotePartition(driver string) string {
	if driver == "mysql" {
		return "`partition`"
	}
	return "partition"
}
