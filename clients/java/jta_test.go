package javaharness_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/jackc/pgx/v5"
)

// Bitronix and what it needs at run time, from Debian's libbtm-java,
// libgeronimo-jta-1.2-spec-java and libslf4j-java (scripts/java-deps.sh installs them).
const (
	btmJar         = "/usr/share/java/btm.jar"
	jtaJar         = "/usr/share/java/geronimo-jta-1.2-spec.jar"
	slf4jJar       = "/usr/share/java/slf4j-api.jar"
	slf4jSimpleJar = "/usr/share/java/slf4j-simple.jar"
)

// bitronixFormatID is BitronixXid.FORMAT_ID ("Btnx"), the format id of every xid Bitronix makes.
const bitronixFormatID = 0x42746e78

// haltStatus is HaltingJournal.HALT_STATUS: the JVM halted after the commit decision.
const haltStatus = 77

// bitronixJars returns the classpath entries of Bitronix, or skips (fails under
// IMAGO_REQUIRE_SERVICES=1) when a jar is missing.
func bitronixJars(t *testing.T) []string {
	t.Helper()
	jars := []string{btmJar, jtaJar, slf4jJar, slf4jSimpleJar}
	var missing []string
	for _, jar := range jars {
		if _, err := os.Stat(jar); err != nil {
			missing = append(missing, jar)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("the JTA test needs %s; run `bash scripts/java-deps.sh` (installs the Debian packages)",
			strings.Join(missing, ", "))
		if testenv.Required() {
			t.Fatalf("%s=1 but %s", testenv.EnvRequireServices, msg)
		}
		t.Skip("skipping: " + msg)
	}
	return jars
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestJavaJTABitronix runs clients/java/testdata/jta/JtaScenarios under Bitronix (Debian's
// libbtm-java) over PostgreSQL and a real Imago, publishing only through the branch associated
// with the calling thread (no Xid in the application): commit, rollback, timeout, suspend and
// resume, no transaction (XAER_PROTO, no request), two threads with two transactions on one
// resource; then a JVM halted right after Bitronix's commit decision, and a second JVM with the
// same journal that recovers it: the message and the row appear exactly once.
//
// It does not restart any database: the crash is the JVM's.
func TestJavaJTABitronix(t *testing.T) {
	java, javac := javaTools(t)
	jars := bitronixJars(t)
	pgURL, _ := jdbcURLs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, testenv.PostgresDSN(t))
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })

	run := "jta" + randomHex(t, 6)
	table := "imago_" + run
	if _, err := db.Exec(ctx, "CREATE TABLE "+table+" (id text PRIMARY KEY)"); err != nil {
		t.Fatalf("create %s: %v", table, err)
	}
	t.Cleanup(func() {
		if _, err := db.Exec(context.Background(), "DROP TABLE IF EXISTS "+table); err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
	})
	srv := startImago(t)
	topic := "jta." + run
	if _, err := srv.b.CreateTopic(topic, broker.TopicConfig{Partitions: 1}); err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	// 24 bytes: a multiple of 3, so its base64 is a prefix of the base64 of every gtrid
	// Bitronix makes (server id, then timestamp and sequence), as PgJDBC writes gids.
	serverID := "imago-jta-" + randomHex(t, 7)
	journal := t.TempDir()

	sep := string(os.PathListSeparator)
	classes := compileJava(t, javac, "", "src")
	libs := strings.Join(append([]string{classes, pgJar}, jars...), sep)
	glue := compileJava(t, javac, libs, "../../examples/java-xa/jta")
	harness := compileJava(t, javac, glue+sep+libs, "testdata/jta")
	classpath := harness + sep + glue + sep + libs

	mode := func(name string) (string, int) {
		t.Helper()
		out, err := javaRun(t, ctx, srv, java,
			"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
			"-cp", classpath, "JtaScenarios", "--mode", name,
			"--imago", srv.url(), "--jdbc", pgURL, "--server-id", serverID, "--journal-dir", journal,
			"--topic", topic, "--table", table, "--run", run)
		report(t, "JtaScenarios --mode "+name, out)
		var ee *exec.ExitError
		switch {
		case err == nil:
			return out, 0
		case errors.As(err, &ee):
			return out, ee.ExitCode()
		}
		t.Fatalf("run JtaScenarios --mode %s: %v", name, err)
		return "", -1
	}
	st := jtaState{t: t, ctx: ctx, db: db, srv: srv, table: table, topic: topic, serverID: serverID}

	if out, code := mode("scenarios"); code != 0 || !strings.Contains(out, "jta: PASS") {
		t.Fatalf("scenarios: exit status %d, want 0 and the PASS line", code)
	}
	st.expect(map[string][2]int{ // key: {rows, messages}
		run + "-commit":     {1, 1},
		run + "-rollback":   {0, 0},
		run + "-notx":       {0, 0},
		run + "-joined-1":   {1, 1},
		run + "-joined-2":   {0, 1},
		run + "-suspended":  {0, 0},
		run + "-timeout":    {0, 0},
		run + "-thread-a":   {1, 0},
		run + "-thread-a-1": {0, 1},
		run + "-thread-a-2": {0, 1},
		run + "-thread-b":   {0, 0},
		run + "-thread-b-1": {0, 0},
		run + "-thread-b-2": {0, 0},
		// the association rules by hand: one branch moved between threads, committed
		run + "-raw-1":         {0, 1},
		run + "-raw-2":         {0, 1},
		run + "-raw-3":         {0, 1},
		run + "-raw-suspended": {0, 0},
		run + "-raw-ended":     {0, 0},
		run + "-raw-failed":    {0, 0},
	})
	st.expectPrepared(0, 0)

	// The commit decision is in the journal, then the JVM is gone: both branches prepared.
	out, code := mode("crash")
	if code != haltStatus || !strings.Contains(out, "HALT after the commit decision") {
		t.Fatalf("crash: exit status %d, want %d after the HALT line", code, haltStatus)
	}
	st.expect(map[string][2]int{run + "-crash": {0, 0}})
	st.expectPrepared(1, 1)

	// A new JVM, the same journal: Bitronix's start-up recovery commits both.
	if out, code := mode("recover"); code != 0 || !strings.Contains(out, "jta: PASS") {
		t.Fatalf("recover: exit status %d, want 0 and the PASS line", code)
	}
	st.expect(map[string][2]int{run + "-crash": {1, 1}})
	st.expectPrepared(0, 0)
}

// jtaState reads what the JTA scenarios left in PostgreSQL and Imago.
type jtaState struct {
	t        *testing.T
	ctx      context.Context
	db       *pgx.Conn
	srv      *imagoServer
	table    string
	topic    string
	serverID string
}

// expect checks, for each key, the number of rows with that id and of messages with that key.
func (s jtaState) expect(want map[string][2]int) {
	s.t.Helper()
	var fetched struct {
		Messages []struct {
			Key *string `json:"key"`
		} `json:"messages"`
	}
	getJSON(s.t, s.srv.url()+"/v1/topics/"+s.topic+"/partitions/0/messages?offset=0&max_messages=1000", &fetched)
	messages := map[string]int{}
	for _, m := range fetched.Messages {
		if m.Key != nil {
			messages[*m.Key]++
		}
	}
	for key, w := range want {
		var rows int
		if err := s.db.QueryRow(s.ctx, "SELECT count(*) FROM "+s.table+" WHERE id = $1", key).Scan(&rows); err != nil {
			s.t.Fatalf("count rows %s: %v", key, err)
		}
		if rows != w[0] || messages[key] != w[1] {
			s.t.Errorf("%s: %d row(s) and %d message(s), want %d and %d", key, rows, messages[key], w[0], w[1])
		}
	}
}

// expectPrepared checks how many branches of this test's Bitronix (its server id begins every
// gtrid) are prepared in PostgreSQL and in Imago.
func (s jtaState) expectPrepared(pg, imago int) {
	s.t.Helper()
	var n int
	pattern := fmt.Sprintf("%d\\_%s%%", bitronixFormatID, base64.StdEncoding.EncodeToString([]byte(s.serverID)))
	if err := s.db.QueryRow(s.ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE $1", pattern).Scan(&n); err != nil {
		s.t.Fatalf("read pg_prepared_xacts: %v", err)
	}
	if n != pg {
		s.t.Errorf("%d branch(es) of server id %s prepared in PostgreSQL, want %d", n, s.serverID, pg)
	}
	var rec struct {
		Xids []struct {
			FormatID int    `json:"format_id"`
			Gtrid    string `json:"gtrid"`
		} `json:"xids"`
	}
	getJSON(s.t, s.srv.url()+"/v1/xa/recover", &rec)
	n = 0
	for _, x := range rec.Xids {
		if x.FormatID == bitronixFormatID && strings.HasPrefix(x.Gtrid, hex.EncodeToString([]byte(s.serverID))) {
			n++
		}
	}
	if n != imago {
		raw, _ := json.Marshal(rec.Xids)
		s.t.Errorf("%d branch(es) of server id %s prepared in Imago, want %d: %s", n, s.serverID, imago, raw)
	}
}

// TestJavaJTASettlementExample runs examples/java-xa/jta/JtaSettlement under Bitronix against a
// real Imago and PostgreSQL: a debit with the funds commits the debit and the message together;
// a debit without them rolls back and leaves neither; nothing stays prepared on either side.
func TestJavaJTASettlementExample(t *testing.T) {
	java, javac := javaTools(t)
	jars := bitronixJars(t)
	pgURL, _ := jdbcURLs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, testenv.PostgresDSN(t))
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })

	sep := string(os.PathListSeparator)
	classes := compileJava(t, javac, "", "src")
	libs := strings.Join(append([]string{classes, pgJar}, jars...), sep)
	example := compileJava(t, javac, libs, "../../examples/java-xa/jta")
	srv := startImago(t)

	account := "acct-jta-" + randomHex(t, 6)
	t.Cleanup(func() {
		if _, err := db.Exec(context.Background(), "DELETE FROM example_wallets WHERE id = $1", account); err != nil {
			t.Errorf("clean up the wallet: %v", err)
		}
	})
	serverID := "settle-jta-" + randomHex(t, 5) // 21 bytes: a multiple of 3 (see TestJavaJTABitronix)
	journal := t.TempDir()
	run := func(extra ...string) int {
		t.Helper()
		args := append([]string{
			"-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
			"-cp", example + sep + libs, "JtaSettlement",
			"--imago", srv.url(), "--jdbc", pgURL, "--account", account, "--amount", "100",
			"--journal-dir", journal, "--server-id", serverID,
		}, extra...)
		out, err := javaRun(t, ctx, srv, java, args...)
		report(t, "JtaSettlement "+strings.Join(extra, " "), out)
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0
		case errors.As(err, &ee):
			return ee.ExitCode()
		}
		t.Fatalf("run the example: %v", err)
		return -1
	}
	st := jtaState{t: t, ctx: ctx, db: db, srv: srv, serverID: serverID}

	if code := run("--init-balance", "150"); code != 0 {
		t.Fatalf("first settlement: exit status %d, want 0 (committed)", code)
	}
	assertSettled(t, ctx, db, srv, account, 50, 1)
	st.expectPrepared(0, 0)

	if code := run(); code != 3 {
		t.Fatalf("second settlement: exit status %d, want 3 (rolled back)", code)
	}
	assertSettled(t, ctx, db, srv, account, 50, 1)
	st.expectPrepared(0, 0)
}
