package outbox_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/migrations"
	"github.com/imagomq/imago/outbox"
)

// The test binary doubles as the broker and relay processes of the crash tests (re-exec):
// IMAGO_OUTBOX_ROLE selects the role.
const roleEnv = "IMAGO_OUTBOX_ROLE"

func TestMain(m *testing.M) {
	switch os.Getenv(roleEnv) {
	case "broker":
		os.Exit(runBrokerRole())
	case "relay":
		os.Exit(runRelayRole())
	}
	os.Exit(m.Run())
}

// runBrokerRole serves a broker over HTTP on IMAGO_OUTBOX_ADDR with data in IMAGO_OUTBOX_DATA,
// and writes its URL to IMAGO_OUTBOX_READY once listening.
func runBrokerRole() int {
	b, err := broker.Open(broker.NewOptions(os.Getenv("IMAGO_OUTBOX_DATA")))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open broker:", err)
		return 1
	}
	gw, err := gateway.New(b, gateway.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		return 1
	}
	ln, err := net.Listen("tcp", os.Getenv("IMAGO_OUTBOX_ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		return 1
	}
	srv := &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	ready := os.Getenv("IMAGO_OUTBOX_READY")
	if err := os.WriteFile(ready+".tmp", []byte("http://"+ln.Addr().String()), 0o644); err != nil {
		return 1
	}
	if err := os.Rename(ready+".tmp", ready); err != nil {
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	_ = srv.Close()
	return map[bool]int{true: 0, false: 1}[b.Close() == nil]
}

// runRelayRole runs one relay publishing over HTTP, configured by IMAGO_OUTBOX_* variables.
func runRelayRole() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := outbox.New(outbox.Options{
		Name:      os.Getenv("IMAGO_OUTBOX_SOURCE"),
		Dialect:   os.Getenv("IMAGO_OUTBOX_DIALECT"),
		DSN:       os.Getenv("IMAGO_OUTBOX_DSN"),
		Table:     os.Getenv("IMAGO_OUTBOX_TABLE"),
		LockRetry: 50 * time.Millisecond,
		BatchSize: 50, // small batches: more batch boundaries for the kills to hit
	}, outbox.ClientPublisher{C: client.New(os.Getenv("IMAGO_OUTBOX_BROKER"))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := r.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "relay:", err)
		return 1
	}
	return 0
}

func uniqueName(t testing.TB, prefix string) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return prefix + hex.EncodeToString(b)
}

// dbEnv is one outbox table of its own in a real database.
type dbEnv struct {
	dialect string
	dsn     string
	db      *sql.DB
	table   string
	source  string
	w       *outbox.Writer
}

var dialects = []string{outbox.Postgres, outbox.MySQL}

// newDBEnv applies the outbox migrations and creates a table of the same shape with a unique
// name, dropped at the end of the test.
func newDBEnv(t testing.TB, dialect string) *dbEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e := &dbEnv{dialect: dialect, source: uniqueName(t, "src_")}
	var err error
	if dialect == outbox.Postgres {
		e.dsn = testenv.PostgresDSN(t)
		e.db, err = sql.Open("pgx", e.dsn)
	} else {
		e.dsn = testenv.MySQLDSN(t)
		e.db, err = sql.Open("mysql", e.dsn)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.db.Close() })
	if err := migrations.ApplyOutbox(ctx, e.db, dialect); err != nil {
		t.Fatal(err)
	}
	var ddl []string
	if dialect == outbox.Postgres {
		e.table = uniqueName(t, "imago.outbox_t")
		ddl = []string{`CREATE TABLE ` + e.table + ` (LIKE imago.outbox INCLUDING ALL)`}
		// The table gets the triggers the migrations give imago.outbox, so that the tests
		// write and relay as an application's default table does.
		var notify bool
		if err := e.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'imago.outbox'::regclass AND tgname = 'outbox_notify')`).Scan(&notify); err != nil {
			t.Fatal(err)
		}
		if notify {
			ddl = append(ddl, `CREATE TRIGGER outbox_notify AFTER INSERT ON `+e.table+` FOR EACH STATEMENT EXECUTE FUNCTION imago.outbox_notify()`)
		}
	} else {
		e.table = uniqueName(t, "imago_outbox_t")
		ddl = []string{`CREATE TABLE ` + e.table + ` LIKE imago_outbox`}
	}
	for _, q := range ddl {
		if _, err := e.db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := e.db.ExecContext(ctx, `DROP TABLE IF EXISTS `+e.table); err != nil {
			t.Errorf("drop %s: %v", e.table, err)
		}
		state, ph := "imago.outbox_relay", "$1"
		if dialect == outbox.MySQL {
			state, ph = "imago_outbox_relay", "?"
		}
		if _, err := e.db.ExecContext(ctx, `DELETE FROM `+state+` WHERE source = `+ph, e.source); err != nil {
			t.Errorf("delete state row: %v", err)
		}
	})
	if e.w, err = outbox.NewWriter(dialect, e.table); err != nil {
		t.Fatal(err)
	}
	return e
}

// payload is what the tests put in a message: which key, which sequence number.
type payload struct {
	Key string `json:"k"`
	Seq int    `json:"s"`
	Pad string `json:"p,omitempty"`
}

// writeTx writes one transaction of msgs (key, seqs...) and commits or rolls back.
func (e *dbEnv) writeTx(ctx context.Context, topic, key string, seqs []int, commit bool) error {
	return e.writeTxHold(ctx, topic, key, seqs, commit, 0)
}

// writeTxHold is writeTx keeping the transaction open for hold after its inserts.
func (e *dbEnv) writeTxHold(ctx context.Context, topic, key string, seqs []int, commit bool, hold time.Duration) error {
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	msgs := make([]outbox.Message, len(seqs))
	for i, s := range seqs {
		b, _ := json.Marshal(payload{Key: key, Seq: s})
		msgs[i] = outbox.Message{Topic: topic, Key: key, Payload: b, Headers: map[string]string{"seq": fmt.Sprint(s)}}
	}
	if err := e.w.Write(ctx, tx, msgs...); err != nil {
		_ = tx.Rollback()
		return err
	}
	if hold > 0 {
		time.Sleep(hold) // an application transaction doing other work after its insert
	}
	if !commit {
		return tx.Rollback()
	}
	return tx.Commit()
}

// rowsLeft counts the rows still in the outbox table.
func (e *dbEnv) rowsLeft(t testing.TB) int {
	t.Helper()
	var n int
	if err := e.db.QueryRow(`SELECT COUNT(*) FROM ` + e.table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *dbEnv) relayOptions() outbox.Options {
	return outbox.Options{Name: e.source, Dialect: e.dialect, DSN: e.dsn, Table: e.table, LockRetry: 50 * time.Millisecond}
}

// ledger records what the writers committed and rolled back.
type ledger struct {
	mu         sync.Mutex
	committed  map[string][]int // key -> seqs in commit order
	rolledBack map[string]map[int]bool
}

func newLedger() *ledger {
	return &ledger{committed: map[string][]int{}, rolledBack: map[string]map[int]bool{}}
}

func (l *ledger) add(key string, seqs []int, committed bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if committed {
		l.committed[key] = append(l.committed[key], seqs...)
		return
	}
	if l.rolledBack[key] == nil {
		l.rolledBack[key] = map[int]bool{}
	}
	for _, s := range seqs {
		l.rolledBack[key][s] = true
	}
}

func (l *ledger) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.committed {
		n += len(s)
	}
	return n
}

// got is a fetched message: partition and payload.
type got struct {
	partition int
	p         payload
}

// check asserts: every committed message exactly once, no rolled-back one, and each key's
// messages in one partition in commit order.
func (l *ledger) check(t testing.TB, msgs []got) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string][]int{}
	part := map[string]int{}
	for _, m := range msgs {
		k := m.p.Key
		if p, ok := part[k]; ok && p != m.partition {
			t.Errorf("key %s in partitions %d and %d", k, p, m.partition)
		}
		part[k] = m.partition
		if l.rolledBack[k][m.p.Seq] {
			t.Errorf("key %s seq %d was rolled back but was published", k, m.p.Seq)
		}
		seen[k] = append(seen[k], m.p.Seq)
	}
	want := 0
	for k, seqs := range l.committed {
		want += len(seqs)
		if fmt.Sprint(seen[k]) != fmt.Sprint(seqs) {
			i := 0
			for i < len(seqs) && i < len(seen[k]) && seqs[i] == seen[k][i] {
				i++
			}
			t.Errorf("key %s: published %d messages, committed %d; they differ from position %d: published %v..., committed %v...",
				k, len(seen[k]), len(seqs), i, seen[k][i:min(i+5, len(seen[k]))], seqs[i:min(i+5, len(seqs))])
		}
	}
	for k := range seen {
		if _, ok := l.committed[k]; !ok {
			t.Errorf("key %s published but never committed: %v", k, seen[k])
		}
	}
	if len(msgs) != want {
		t.Errorf("published %d messages, committed %d", len(msgs), want)
	}
}

// fetchAllBroker reads every message of topic from an in-process broker.
func fetchAllBroker(t testing.TB, b *broker.Broker, topic string) []got {
	t.Helper()
	info, err := b.Topic(topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []got
	for p := range len(info.Partitions) {
		off := int64(0)
		for {
			res, err := b.Fetch(context.Background(), topic, p, broker.FetchOptions{Offset: off, MaxMessages: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range res.Messages {
				var pl payload
				if err := json.Unmarshal(m.Value, &pl); err != nil {
					t.Fatalf("partition %d offset %d: %v", p, m.Offset, err)
				}
				out = append(out, got{p, pl})
			}
			if res.NextOffset >= res.EndOffset {
				break
			}
			off = res.NextOffset
		}
	}
	return out
}

// fetchMessages reads every message of topic from an in-process broker, partition after
// partition.
func fetchMessages(t testing.TB, b *broker.Broker, topic string) []broker.FetchedMessage {
	t.Helper()
	info, err := b.Topic(topic)
	if err != nil {
		t.Fatal(err)
	}
	var out []broker.FetchedMessage
	for p := range len(info.Partitions) {
		for off := int64(0); ; {
			res, err := b.Fetch(context.Background(), topic, p, broker.FetchOptions{Offset: off, MaxMessages: 1000})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, res.Messages...)
			if res.NextOffset >= res.EndOffset {
				break
			}
			off = res.NextOffset
		}
	}
	return out
}

// fetchAllHTTP reads every message of topic over HTTP.
func fetchAllHTTP(t testing.TB, c *client.Client, topic string, partitions int) []got {
	t.Helper()
	ctx := context.Background()
	var out []got
	for p := range partitions {
		off := int64(0)
		for {
			res, err := c.Fetch(ctx, topic, p, client.FetchOptions{Offset: off, MaxMessages: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range res.Messages {
				var raw []byte
				if m.ValueBase64 != nil {
					raw, err = base64.StdEncoding.DecodeString(*m.ValueBase64)
				} else {
					raw = m.Value
				}
				var pl payload
				if err == nil {
					err = json.Unmarshal(raw, &pl)
				}
				if err != nil {
					t.Fatalf("partition %d offset %d: %v", p, m.Offset, err)
				}
				out = append(out, got{p, pl})
			}
			if res.NextOffset >= res.EndOffset {
				break
			}
			off = res.NextOffset
		}
	}
	return out
}

// waitFor polls cond every 10ms until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// proc is a child process of this test binary in some role.
type proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func startProc(t testing.TB, role, logPath string, env ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "----- start %s %s\n", role, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = childSysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(p.exited)
	}()
	t.Cleanup(p.kill)
	return p
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func (p *proc) alive() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// brokerProc runs the broker role on a fixed address so a restart keeps its URL.
type brokerProc struct {
	*proc
	URL           string
	dir, addr, lg string
}

func startBroker(t testing.TB, dir, addr string) *brokerProc {
	t.Helper()
	ready := filepath.Join(dir, "ready")
	os.Remove(ready)
	p := startProc(t, "broker", filepath.Join(dir, "broker.log"),
		"IMAGO_OUTBOX_DATA="+filepath.Join(dir, "data"), "IMAGO_OUTBOX_ADDR="+addr, "IMAGO_OUTBOX_READY="+ready)
	bp := &brokerProc{proc: p, dir: dir}
	waitFor(t, 60*time.Second, "broker ready", func() bool {
		if !p.alive() {
			b, _ := os.ReadFile(p.log)
			t.Fatalf("broker exited:\n%s", b)
		}
		b, err := os.ReadFile(ready)
		if err == nil && len(b) > 0 {
			bp.URL = strings.TrimSpace(string(b))
			return true
		}
		return false
	})
	bp.addr = strings.TrimPrefix(bp.URL, "http://")
	return bp
}

func (e *dbEnv) startRelayProc(t testing.TB, brokerURL, logPath string) *proc {
	t.Helper()
	return startProc(t, "relay", logPath,
		"IMAGO_OUTBOX_SOURCE="+e.source, "IMAGO_OUTBOX_DIALECT="+e.dialect, "IMAGO_OUTBOX_DSN="+e.dsn,
		"IMAGO_OUTBOX_TABLE="+e.table, "IMAGO_OUTBOX_BROKER="+brokerURL)
}

// openBroker opens an in-process broker in a temporary directory with one topic.
func openBroker(t testing.TB, topic string, partitions int) *broker.Broker {
	t.Helper()
	b, err := broker.Open(broker.NewOptions(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	if _, err := b.CreateTopic(topic, broker.TopicConfig{Partitions: partitions}); err != nil {
		t.Fatal(err)
	}
	return b
}

// startRelay runs a relay in-process until the test ends.
func startRelay(t testing.TB, opts outbox.Options, pub outbox.Publisher) *outbox.Relay {
	t.Helper()
	r, err := outbox.New(opts, pub)
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(func() { r.Close() })
	return r
}

func pgDSN(t testing.TB) string { return testenv.PostgresDSN(t) }
func myDSN(t testing.TB) string { return testenv.MySQLDSN(t) }
