package javaharness_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
	"github.com/jackc/pgx/v5"
)

// exampleFormatID is SettlementExample.FORMAT_ID ("STL"); PgJDBC writes it first in the gid.
const exampleFormatID = 0x53544c

// settlementExample is examples/java-xa/SettlementExample compiled, with a real Imago, the real
// PostgreSQL and an account of its own (deleted at the end).
type settlementExample struct {
	t         *testing.T
	ctx       context.Context
	db        *pgx.Conn
	srv       *imagoServer
	java      string
	classpath string
	pgURL     string
	account   string
	decisions string // the example's decision log
}

func newSettlementExample(t *testing.T) *settlementExample {
	t.Helper()
	java, javac := javaTools(t)
	pgURL, _ := jdbcURLs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	db, err := pgx.Connect(ctx, testenv.PostgresDSN(t))
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })

	classes := compileJava(t, javac, "", "src")
	// Only the hand-written example: jta/ needs Bitronix (jta_test.go compiles it).
	example := compileJava(t, javac, classes+string(os.PathListSeparator)+pgJar, "../../examples/java-xa/SettlementExample.java")
	e := &settlementExample{
		t: t, ctx: ctx, db: db, srv: startImago(t), java: java, pgURL: pgURL,
		classpath: strings.Join([]string{example, classes, pgJar}, string(os.PathListSeparator)),
		account:   "acct-test-" + randomHex(t, 6),
		decisions: filepath.Join(t.TempDir(), "decisions.log"),
	}
	t.Cleanup(func() {
		if _, err := db.Exec(context.Background(), "DELETE FROM example_wallets WHERE id = $1", e.account); err != nil {
			t.Errorf("clean up the wallet: %v", err)
		}
	})
	return e
}

// run runs the example against the broker at imagoURL (the server's, or a proxy's in front of
// it) and returns its output and exit status.
func (e *settlementExample) run(imagoURL string, amount int, extra ...string) (string, int) {
	t := e.t
	t.Helper()
	args := append([]string{
		"-cp", e.classpath, "SettlementExample",
		"--imago", imagoURL, "--jdbc", e.pgURL, "--account", e.account,
		"--amount", fmt.Sprint(amount), "--decision-log", e.decisions,
	}, extra...)
	out, err := javaRun(t, e.ctx, e.srv, e.java, args...)
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

// TestJavaSettlementExample runs examples/java-xa/SettlementExample twice against a real
// Imago and PostgreSQL: a debit with the funds commits the debit and the message together;
// a debit without them (the UPDATE matches no row) rolls both back and leaves neither.
func TestJavaSettlementExample(t *testing.T) {
	e := newSettlementExample(t)

	// 1. Funds: 150, debit 100 → committed on both sides.
	if out, code := e.run(e.srv.url(), 100, "--init-balance", "150"); code != 0 {
		t.Fatalf("first settlement: exit status %d, want 0 (committed):\n%s", code, out)
	}
	assertSettled(t, e.ctx, e.db, e.srv, e.account, 50, 1)
	if log := readFile(t, e.decisions); !strings.Contains(log, " commit ") {
		t.Errorf("decision log has no commit decision:\n%s", log)
	}

	// 2. Funds: 50, debit 100 → the UPDATE matches no row; both branches roll back.
	if out, code := e.run(e.srv.url(), 100); code != 3 {
		t.Fatalf("second settlement: exit status %d, want 3 (rolled back):\n%s", code, out)
	}
	assertSettled(t, e.ctx, e.db, e.srv, e.account, 50, 1)
	if log := readFile(t, e.decisions); !strings.Contains(log, " rollback ") {
		t.Errorf("decision log has no rollback decision:\n%s", log)
	}
}

// TestJavaSettlementExampleAccountIsData: an account id holding JSON syntax is published as the
// string it is. Spliced into the message's JSON, it would rewrite the message's fields (here an
// amount of 999 beside the debit of 100).
func TestJavaSettlementExampleAccountIsData(t *testing.T) {
	e := newSettlementExample(t)
	e.account += `","amount":999,"x":"`
	if out, code := e.run(e.srv.url(), 100, "--init-balance", "150"); code != 0 {
		t.Fatalf("settlement: exit status %d, want 0 (committed):\n%s", code, out)
	}
	assertSettled(t, e.ctx, e.db, e.srv, e.account, 50, 1)
}

// cutFirstCommit serves a proxy in front of e's Imago that hands the first POST /v1/xa/commit
// to act instead (which does something to the real server and returns its status), then
// closes the connection without a byte of answer: a network fault, which a server cannot be
// asked to produce. It returns the proxy's URL and a function that reports act's status.
func cutFirstCommit(t *testing.T, e *settlementExample, act func(r *http.Request, proxy http.Handler) int) (string, func() (int, bool)) {
	target, err := url.Parse(e.srv.url())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var cut atomic.Bool
	cut.Store(true)
	acted := make(chan int, 1)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/xa/commit" || !cut.CompareAndSwap(true, false) {
			proxy.ServeHTTP(w, r)
			return
		}
		acted <- act(r, proxy)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack the commit's connection: %v", err)
			return
		}
		conn.Close() // the answer is lost
	}))
	t.Cleanup(front.Close)
	return front.URL, func() (int, bool) {
		select {
		case status := <-acted:
			return status, true
		default:
			return 0, false
		}
	}
}

// TestJavaSettlementExampleCommitAnswerLost: Imago commits the example's branch, but the answer
// is lost on the way (cutFirstCommit). The example's retry gets XAER_NOTA, since a committed
// branch is forgotten; the example must find its message in the topic and report the
// settlement committed (exit 0), not in doubt.
func TestJavaSettlementExampleCommitAnswerLost(t *testing.T) {
	e := newSettlementExample(t)
	front, acted := cutFirstCommit(t, e, func(r *http.Request, proxy http.Handler) int {
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, r) // the real broker commits
		return rec.Code
	})
	out, code := e.run(front, 100, "--init-balance", "150")
	if status, ok := acted(); !ok || status != http.StatusOK {
		t.Fatalf("the cut commit was answered %d by the server (sent: %v), want 200: the test tested nothing", status, ok)
	}
	if code != 0 || !strings.Contains(out, "committed by an earlier attempt") {
		t.Fatalf("exit status %d, want 0 (committed, checked in the topic):\n%s", code, out)
	}
	assertSettled(t, e.ctx, e.db, e.srv, e.account, 50, 1)
}

// TestJavaSettlementExampleCommitBodyCut: Imago commits the example's branch and answers 200,
// but the answer's body is cut off on the way (a proxy in front of the real broker sends the
// status line, a Content-Length, half the body, and closes: a network fault a server cannot be
// asked to produce). The status line says committed: the first commit must succeed, without a
// retry (which would get XAER_NOTA), with no offsets, and the example exit 0.
func TestJavaSettlementExampleCommitBodyCut(t *testing.T) {
	e := newSettlementExample(t)
	target, err := url.Parse(e.srv.url())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var commits atomic.Int32
	acted := make(chan int, 1)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/xa/commit" {
			proxy.ServeHTTP(w, r)
			return
		}
		if commits.Add(1) > 1 {
			proxy.ServeHTTP(w, r) // a retry: the real broker's answer (XAER_NOTA)
			return
		}
		rec := httptest.NewRecorder()
		proxy.ServeHTTP(rec, r) // the real broker commits
		acted <- rec.Code
		body := rec.Body.Bytes()
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack the commit's connection: %v", err)
			return
		}
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			rec.Code, len(body))
		buf.Write(body[:len(body)/2])
		if err := buf.Flush(); err != nil {
			t.Errorf("write the cut answer: %v", err)
		}
	}))
	t.Cleanup(front.Close)

	out, code := e.run(front.URL, 100, "--init-balance", "150")
	select {
	case status := <-acted:
		if status != http.StatusOK {
			t.Fatalf("the real broker answered the commit %d, want 200: the test tested nothing", status)
		}
	default:
		t.Fatalf("no commit went through the proxy: the test tested nothing")
	}
	if code != 0 || !strings.Contains(out, "commit imago: ok []") {
		t.Fatalf("exit status %d, want 0 with the first commit ok and no offsets:\n%s", code, out)
	}
	if n := commits.Load(); n != 1 {
		t.Fatalf("%d commits sent, want 1 (a 2xx with its body cut off is committed):\n%s", n, out)
	}
	assertSettled(t, e.ctx, e.db, e.srv, e.account, 50, 1)
}

// TestJavaSettlementExampleBranchLost: before the example's commit reaches Imago, an operator
// rolls the prepared branch back heuristically and forgets it (real admin calls on the real
// server), and the commit's connection is cut (cutFirstCommit). The retry gets XAER_NOTA as
// after a commit, but the topic holds no message of the transaction: the example must say the
// branch was lost, half committed (exit 4), not committed.
func TestJavaSettlementExampleBranchLost(t *testing.T) {
	e := newSettlementExample(t)
	front, acted := cutFirstCommit(t, e, func(r *http.Request, _ http.Handler) int {
		var body struct {
			Xid json.RawMessage `json:"xid"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("read the commit's xid: %v", err)
			return 0
		}
		status := 0
		for _, step := range []struct{ path, body string }{
			{"/v1/xa/heuristic", `{"xid": ` + string(body.Xid) + `, "decision": "rollback"}`},
			{"/v1/xa/forget", `{"xid": ` + string(body.Xid) + `}`},
		} {
			resp, err := http.Post(e.srv.url()+step.path, "application/json", strings.NewReader(step.body))
			if err != nil {
				t.Errorf("POST %s: %v", step.path, err)
				return 0
			}
			resp.Body.Close()
			if status = resp.StatusCode; status != http.StatusOK {
				t.Errorf("POST %s: %s", step.path, resp.Status)
				return status
			}
		}
		return status
	})
	out, code := e.run(front, 100, "--init-balance", "150")
	if status, ok := acted(); !ok || status != http.StatusOK {
		t.Fatalf("the operator's rollback and forget answered %d (sent: %v), want 200: the test tested nothing", status, ok)
	}
	if code != 4 || !strings.Contains(out, "branch lost") {
		t.Fatalf("exit status %d, want 4 (branch lost):\n%s", code, out)
	}
	assertSettled(t, e.ctx, e.db, e.srv, e.account, 50, 0)
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
