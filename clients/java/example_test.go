package javaharness_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
	"github.com/jackc/pgx/v5"
)

// exampleFormatID is SettlementExample.FORMAT_ID ("STL"); PgJDBC writes it first in the gid.
const exampleFormatID = 0x53544c

// TestJavaSettlementExample runs examples/java-xa/SettlementExample twice against a real
// Imago and PostgreSQL: a debit with the funds commits the debit and the message together;
// a debit without them (the UPDATE matches no row) rolls both back and leaves neither.
func TestJavaSettlementExample(t *testing.T) {
	java, javac := javaTools(t)
	pgURL, _ := jdbcURLs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := pgx.Connect(ctx, testenv.PostgresDSN(t))
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })

	classes := compileJava(t, javac, "", "src")
	// Only the hand-written example: jta/ needs Bitronix (jta_test.go compiles it).
	example := compileJava(t, javac, classes+string(os.PathListSeparator)+pgJar, "../../examples/java-xa/SettlementExample.java")
	srv := startImago(t)

	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	account := "acct-test-" + hex.EncodeToString(rnd[:])
	t.Cleanup(func() {
		if _, err := db.Exec(context.Background(), "DELETE FROM example_wallets WHERE id = $1", account); err != nil {
			t.Errorf("clean up the wallet: %v", err)
		}
	})
	decisions := filepath.Join(t.TempDir(), "decisions.log")
	run := func(amount int, extra ...string) (string, int) {
		t.Helper()
		args := append([]string{
			"-cp", strings.Join([]string{example, classes, pgJar}, string(os.PathListSeparator)),
			"SettlementExample",
			"--imago", srv.url(), "--jdbc", pgURL, "--account", account,
			"--amount", fmt.Sprint(amount), "--decision-log", decisions,
		}, extra...)
		out, err := javaRun(t, ctx, srv, java, args...)
		report(t, fmt.Sprintf("SettlementExample --amount %d %s", amount, strings.Join(extra, " ")), out)
		var ee *exec.ExitError
		switch {
		case err == nil:
			return out, 0
		case errors.As(err, &ee):
			return out, ee.ExitCode()
		}
		t.Fatalf("run the example: %v", err)
		return "", -1
	}

	// 1. Funds: 150, debit 100 → committed on both sides.
	if out, code := run(100, "--init-balance", "150"); code != 0 {
		t.Fatalf("first settlement: exit status %d, want 0 (committed):\n%s", code, out)
	}
	assertSettled(t, ctx, db, srv, account, 50, 1)
	if log := readFile(t, decisions); !strings.Contains(log, " commit ") {
		t.Errorf("decision log has no commit decision:\n%s", log)
	}

	// 2. Funds: 50, debit 100 → the UPDATE matches no row; both branches roll back.
	if out, code := run(100); code != 3 {
		t.Fatalf("second settlement: exit status %d, want 3 (rolled back):\n%s", code, out)
	}
	assertSettled(t, ctx, db, srv, account, 50, 1)
	if log := readFile(t, decisions); !strings.Contains(log, " rollback ") {
		t.Errorf("decision log has no rollback decision:\n%s", log)
	}
}

// assertSettled checks the balance, the number of settlement messages for the account (and
// their amount), and that no branch is left prepared in either resource.
func assertSettled(t *testing.T, ctx context.Context, db *pgx.Conn, srv *imagoServer, account string, balance int64, messages int) {
	t.Helper()
	var got int64
	if err := db.QueryRow(ctx, "SELECT balance FROM example_wallets WHERE id = $1", account).Scan(&got); err != nil {
		t.Fatalf("read the balance: %v", err)
	}
	if got != balance {
		t.Errorf("balance of %s = %d, want %d", account, got, balance)
	}
	var prepared int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE $1",
		fmt.Sprintf("%d\\_%%", exampleFormatID)).Scan(&prepared); err != nil {
		t.Fatalf("read pg_prepared_xacts: %v", err)
	}
	if prepared != 0 {
		t.Errorf("%d of the example's branches are still prepared in PostgreSQL", prepared)
	}

	var fetched struct {
		Messages []struct {
			Key   *string         `json:"key"`
			Value json.RawMessage `json:"value"`
		} `json:"messages"`
	}
	getJSON(t, srv.url()+"/v1/topics/settlement.transfers/partitions/0/messages?offset=0&max_messages=1000", &fetched)
	n := 0
	for _, m := range fetched.Messages {
		if m.Key == nil || *m.Key != account {
			continue
		}
		n++
		var v struct {
			Account string `json:"account"`
			Amount  int64  `json:"amount"`
		}
		if err := json.Unmarshal(m.Value, &v); err != nil || v.Account != account || v.Amount != 100 {
			t.Errorf("settlement message %s: want account %s and amount 100 (%v)", m.Value, account, err)
		}
	}
	if n != messages {
		t.Errorf("%d settlement messages for %s, want %d", n, account, messages)
	}
	var rec struct {
		Xids []json.RawMessage `json:"xids"`
	}
	getJSON(t, srv.url()+"/v1/xa/recover", &rec)
	if len(rec.Xids) != 0 {
		t.Errorf("Imago still lists branches in recover: %s", rec.Xids)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: decode: %v", url, err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(b)
}
