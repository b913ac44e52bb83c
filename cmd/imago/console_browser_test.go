package main

// The operator console in a real browser: Debian's chromium, headless, driven with chromedp,
// against a live `imago serve` child process with a MariaDB resource (wallet) and a PostgreSQL
// resource (ledger) and tokens configured. The test
//   - gives the console the admin token when it asks for one;
//   - creates a topic and produces, and finds the new end offset on the topics page;
//   - makes a group lag, and finds the lag on the groups page;
//   - makes two global transactions in doubt, resolves one through the UI (typing its id to
//     confirm) and checks through the API that it is resolved, and by whom;
//   - opens the console with a consume-only token: the resolve buttons are disabled, and the
//     API answers 403 when the resolve is called anyway.
//
// With IMAGO_CONSOLE_SCREENSHOTS=<dir> it also saves a 1280×800 PNG of every page there
// (`make screenshots` writes docs/console/).
//
// In doubt, from the outside: the coordinator's decision log is a table in the ledger's
// database (coordinator.decision_log: ledger), a fresh database of this test. The test holds a
// SHARE lock on that table, so the commit decision cannot be written; once the PostgreSQL
// branch is prepared it rolls that branch back by hand (a DBA's heuristic decision) and lets
// the decision through. Phase 2 then finds the branch gone: the transaction is in_doubt, the
// state an operator resolves.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/imagomq/imago/internal/testenv"
)

const (
	consoleOpsToken    = "console-ops-secret"
	consoleReaderToken = "console-reader-secret"
)

// consoleAPI calls the HTTP API with a token and decodes the JSON answer into out (when not nil).
func consoleAPI(t *testing.T, base, tok, method, path string, body any, out any) int {
	t.Helper()
	code, err := consoleCall(base, tok, method, path, body, out)
	if err != nil {
		t.Fatal(err)
	}
	return code
}

// consoleCall is consoleAPI for goroutines: the error is returned.
func consoleCall(base, tok, method, path string, body any, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return 0, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return res.StatusCode, fmt.Errorf("%s %s: %d %s: %w", method, path, res.StatusCode, b, err)
		}
	}
	return res.StatusCode, nil
}

// consoleEnv is the server and the databases of the test.
type consoleEnv struct {
	t                  *testing.T
	url                string
	topic, group, sfx  string
	traffic            string
	wallet, ledger     string
	ledgerDSN          string
	my, pg             *sql.DB // pg: the test's own database (the ledger's)
	screenshots        string
	browser            context.Context
	shots              []string
	indoubtA, indoubtB string
}

func TestConsoleBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser; skipped with -short (make test runs it without)")
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if testenv.Required() {
			t.Fatal("chromium is not installed: run scripts/services.sh (it installs Debian's chromium)")
		}
		t.Skip("chromium is not installed (scripts/services.sh installs it)")
	}
	e := &consoleEnv{t: t, sfx: gbankSuffix(t), screenshots: os.Getenv("IMAGO_CONSOLE_SCREENSHOTS")}
	e.topic, e.group = "console."+e.sfx, "console-readers-"+e.sfx
	e.setupDatabases()
	e.startServer()
	e.startBrowser(chromium)
	began := time.Now()

	e.startTraffic()
	ops := e.tab()
	e.giveToken(ops, consoleOpsToken, "ops")
	e.do(ops, "refresh every second", js(`(() => { const s = document.getElementById('refresh'); s.value = '1000'; s.dispatchEvent(new Event('change')); return true; })()`))
	e.topicsPage(ops)
	e.groupsPage(ops)
	e.overviewPage(ops)
	e.makeInDoubt(e.indoubtA)
	e.makeInDoubt(e.indoubtB)
	e.xaPage(ops)
	e.resolveThroughUI(ops)

	reader := e.tab()
	e.giveToken(reader, consoleReaderToken, "reader")
	e.readerCannotResolve(reader)

	// Leave nothing prepared: the second in-doubt transaction, rolled back through the API.
	var tx struct{ Status string }
	if code := consoleAPI(t, e.url, consoleOpsToken, "POST", "/v1/global-transactions/"+e.indoubtB+"/resolve",
		map[string]string{"decision": "rollback"}, &tx); code != 200 {
		t.Errorf("resolve %s as admin: %d", e.indoubtB, code)
	}
	t.Logf("browser part took %v; screenshots: %v", time.Since(began).Round(time.Millisecond), e.shots)
}

func (e *consoleEnv) setupDatabases() {
	t := e.t
	base := testenv.PostgresDSN(t)
	var err error
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	db := "imago_console_" + e.sfx
	if _, err := admin.Exec("CREATE DATABASE " + db); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", db, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + db
	e.ledgerDSN = u.String()
	if e.pg, err = sql.Open("pgx", e.ledgerDSN); err != nil {
		t.Fatal(err)
	}
	if e.my, err = sql.Open("mysql", testenv.MySQLDSN(t)); err != nil {
		t.Fatal(err)
	}
	e.wallet, e.ledger = "cw_"+e.sfx, "cl_"+e.sfx
	t.Cleanup(func() {
		e.my.Exec("DROP TABLE IF EXISTS " + e.wallet)
		e.my.Close()
		e.pg.Close()
	})
	for _, q := range []string{
		"CREATE TABLE " + e.wallet + " (id VARCHAR(16) PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB",
		"INSERT INTO " + e.wallet + " VALUES ('alice', 1000)",
	} {
		if _, err := e.my.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		"CREATE TABLE " + e.ledger + " (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)",
		"INSERT INTO " + e.ledger + " VALUES ('bob', 0)",
	} {
		if _, err := e.pg.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	e.indoubtA, e.indoubtB = "settle-"+e.sfx+"-a", "settle-"+e.sfx+"-b"
}

func (e *consoleEnv) startServer() {
	t := e.t
	dir := t.TempDir()
	cfg := fmt.Sprintf(`resources:
  wallet: {driver: mysql, dsn: %q}
  ledger: {driver: postgres, dsn: %q}
coordinator: {decision_log: ledger}
operations:
  wallet.move:
    sql: "UPDATE %[3]s SET balance = balance + :delta WHERE id = :account AND balance + :delta >= 0"
    expect_rows: 1
    params: {account: "string max_length=16", delta: integer}
  ledger.move:
    sql: "UPDATE %[4]s SET balance = balance + :delta WHERE id = :account AND balance + :delta >= 0"
    expect_rows: 1
    params: {account: "string max_length=16", delta: integer}
auth:
  tokens:
    - {name: ops, token_env: CONSOLE_TEST_OPS_TOKEN, produce: ["*"], consume: ["*"], admin: true}
    - {name: reader, token_env: CONSOLE_TEST_READER_TOKEN, consume: ["*"]}
`, testenv.MySQLDSN(t), e.ledgerDSN, e.wallet, e.ledger)
	path := filepath.Join(dir, "imago.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{envXAGrace + "=1s", envXARecoveryInterval + "=200ms",
		"CONSOLE_TEST_OPS_TOKEN=" + consoleOpsToken, "CONSOLE_TEST_READER_TOKEN=" + consoleReaderToken}
	srv := startServerEnv(t, filepath.Join(dir, "data"), env, "--config", path)
	e.url = srv.URL
}

// startBrowser starts one headless chromium for the test; tab opens a tab in it.
func (e *consoleEnv) startBrowser(path string) {
	t := e.t
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(bctx); err != nil { // starts the browser (no timeout on this first run)
		t.Fatalf("start chromium: %v", err)
	}
	e.browser = bctx
}

func (e *consoleEnv) tab() context.Context {
	ctx, cancel := chromedp.NewContext(e.browser) // a new tab: its own session storage
	e.t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		e.t.Fatal(err)
	}
	return ctx
}

// do runs steps with a bound on the whole.
func (e *consoleEnv) do(ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	e.t.Helper()
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(c, steps...); err != nil {
		html, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('main') ? document.getElementById('main').innerText : ''`))
		e.t.Fatalf("%s: %v\npage text:\n%s", what, err, html)
	}
}

// wait polls a JavaScript expression until it is truthy.
func wait(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[any](expr, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(15*time.Second))(ctx, t)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", expr, err)
		}
		return nil
	})
}

// js evaluates an expression.
func js(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[any](expr)(ctx, t)
		return err
	})
}

func goTo(hash string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Evaluate[any](fmt.Sprintf(`location.hash = %q`, hash))(ctx, t)
		return err
	})
}

// loaded waits until the page on screen is page and has been filled n times.
func loaded(page string, n int) chromedp.Action[chromedp.Void] {
	return wait(fmt.Sprintf(`document.getElementById('main').dataset.page === %q && Number(document.getElementById('main').dataset.loaded) >= %d`, page, n))
}

// shot saves a PNG of the viewport (1280×800) when screenshots are asked for.
func (e *consoleEnv) shot(ctx context.Context, name string) {
	e.t.Helper()
	if e.screenshots == "" {
		return
	}
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.CaptureScreenshot())
	if err != nil {
		e.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(e.screenshots, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.screenshots, name+".png"), png, 0o644); err != nil {
		e.t.Fatal(err)
	}
	e.shots = append(e.shots, name)
}

func (e *consoleEnv) giveToken(ctx context.Context, token, name string) {
	e.do(ctx, "open the console and give it a token",
		chromedp.Navigate(e.url+"/console/"),
		wait(`document.getElementById('token-dialog').open`),
		chromedp.SendKeys(chromedp.ID("token-input"), token),
		chromedp.Click(chromedp.CSS(`#token-form button[type=submit]`)),
		wait(fmt.Sprintf(`(document.getElementById('token-name') || {}).textContent === %q`, name)),
	)
}

func (e *consoleEnv) topicsPage(ctx context.Context) {
	t := e.t
	if code := consoleAPI(t, e.url, consoleOpsToken, "PUT", "/v1/topics/"+e.topic, map[string]int{"partitions": 1}, nil); code != 201 {
		t.Fatalf("create topic: %d", code)
	}
	var pr struct{ Offsets []struct{ Offset int64 } }
	msgs := map[string]any{"messages": []map[string]any{
		{"key": "order-1001", "value": map[string]any{"order": 1001, "amount": "1250.00", "currency": "EUR"}, "headers": map[string]string{"source": "checkout"}},
		{"key": "order-1002", "value": map[string]any{"order": 1002, "amount": "99.90", "currency": "EUR"}},
		{"key": "order-1003", "value_base64": "AAECA/7/"},
	}}
	if code := consoleAPI(t, e.url, consoleOpsToken, "POST", "/v1/topics/"+e.topic+"/messages", msgs, &pr); code != 200 || len(pr.Offsets) != 3 {
		t.Fatalf("produce: %d %+v", code, pr)
	}
	e.do(ctx, "topics page shows the new end offset", goTo("#/topics"), loaded("topics", 1),
		wait(fmt.Sprintf(`(document.querySelector('[data-end=%q]') || {}).textContent === '3'`, e.topic)))
	e.shot(ctx, "topics")
	e.do(ctx, "topic page and message browser", goTo("#/topics/"+e.topic), loaded("topics", 1),
		wait(fmt.Sprintf(`(document.querySelector('[data-end=%q]') || {}).textContent === '3'`, e.topic+"/0")),
		chromedp.SetValue(chromedp.ID("mb-offset"), "0"),
		chromedp.Click(chromedp.CSS(`#browse button[type=submit]`)),
		wait(`document.querySelectorAll('pre.json').length === 2 && document.querySelectorAll('pre.b64').length === 1`),
		wait(`document.querySelector('pre.json').textContent.includes('"amount": "1250.00"')`), // pretty-printed
		wait(`document.querySelector('pre.b64').textContent === 'AAECA/7/'`),
	)
	e.shot(ctx, "topic")
}

func (e *consoleEnv) groupsPage(ctx context.Context) {
	t := e.t
	var join struct {
		MemberID string `json:"member_id"`
	}
	if code := consoleAPI(t, e.url, consoleOpsToken, "POST", "/v1/groups/"+e.group+"/members",
		map[string]any{"topics": []string{e.topic}, "consumer_id": "settlement-worker-1"}, &join); code != 201 {
		t.Fatalf("join: %d", code)
	}
	commit := map[string]any{"member_id": join.MemberID, "offsets": []map[string]any{{"topic": e.topic, "partition": 0, "offset": 1}}}
	if code := consoleAPI(t, e.url, consoleOpsToken, "POST", "/v1/groups/"+e.group+"/offsets", commit, nil); code != 200 {
		t.Fatalf("commit offsets: %d", code)
	}
	// Committed 1 of 3: the group lags by 2.
	e.do(ctx, "groups page shows the lag", goTo("#/groups"), loaded("groups", 1),
		wait(fmt.Sprintf(`(document.querySelector('[data-lag=%q]') || {}).textContent === '2'`, e.group)))
	e.shot(ctx, "groups")
	e.do(ctx, "group page", goTo("#/groups/"+e.group), loaded("groups", 2),
		wait(fmt.Sprintf(`(document.querySelector('[data-lag=%q]') || {}).textContent === '2'`, e.group)),
		wait(`document.querySelector('svg.chart polyline')`))

	// A group behind the steady traffic: its lag grows, drops when it commits, grows again;
	// the page's chart draws that from its samples.
	audit := "payments-audit-" + e.sfx
	if code := consoleAPI(t, e.url, consoleOpsToken, "POST", "/v1/groups/"+audit+"/members",
		map[string]any{"topics": []string{e.traffic}, "consumer_id": "audit-1"}, &join); code != 201 {
		t.Fatalf("join %s: %d", audit, code)
	}
	var start []map[string]any
	for p := range 3 {
		start = append(start, map[string]any{"topic": e.traffic, "partition": p, "offset": 0})
	}
	if code := consoleAPI(t, e.url, consoleOpsToken, "POST", "/v1/groups/"+audit+"/offsets",
		map[string]any{"member_id": join.MemberID, "offsets": start}, nil); code != 200 {
		t.Fatalf("commit %s: %d", audit, code)
	}
	samples := func(n int) chromedp.Action[chromedp.Void] {
		return wait(fmt.Sprintf(`((document.querySelector('svg.chart polyline') || {getAttribute: () => ''}).getAttribute('points') || '').split(' ').length >= %d`, n))
	}
	e.do(ctx, "lag chart", goTo("#/groups/"+audit), loaded("groups", 1), samples(4))
	var info struct {
		Partitions []struct {
			Partition int   `json:"partition"`
			EndOffset int64 `json:"end_offset"`
		} `json:"partitions"`
	}
	consoleAPI(t, e.url, consoleOpsToken, "GET", "/v1/topics/"+e.traffic, nil, &info)
	var offs []map[string]any
	for _, p := range info.Partitions {
		offs = append(offs, map[string]any{"topic": e.traffic, "partition": p.Partition, "offset": p.EndOffset})
	}
	if code := consoleAPI(t, e.url, consoleOpsToken, "POST", "/v1/groups/"+audit+"/offsets",
		map[string]any{"member_id": join.MemberID, "offsets": offs}, nil); code != 200 {
		t.Fatalf("commit %s: %d", audit, code)
	}
	e.do(ctx, "lag chart after a commit", samples(8))
	e.shot(ctx, "group")
}

// startTraffic produces to a topic of its own (a few messages every 100 ms) and fetches from
// it, until the test ends, so that rates, lag and charts have something to show.
func (e *consoleEnv) startTraffic() {
	t := e.t
	e.traffic = "payments." + e.sfx
	if code := consoleAPI(t, e.url, consoleOpsToken, "PUT", "/v1/topics/"+e.traffic, map[string]int{"partitions": 3}, nil); code != 201 {
		t.Fatalf("create topic %s: %d", e.traffic, code)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		var next int64
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var msgs []map[string]any
			for j := 0; j <= i%3; j++ {
				msgs = append(msgs, map[string]any{"key": fmt.Sprintf("acct-%d", (i+j)%7),
					"value": map[string]any{"payment": i, "amount": 100 + i%50}})
			}
			consoleCall(e.url, consoleOpsToken, "POST", "/v1/topics/"+e.traffic+"/messages", map[string]any{"messages": msgs}, nil)
			var f struct {
				NextOffset int64 `json:"next_offset"`
			}
			if code, _ := consoleCall(e.url, consoleOpsToken, "GET", fmt.Sprintf("/v1/topics/%s/partitions/0/messages?offset=%d", e.traffic, next), nil, &f); code == 200 {
				next = f.NextOffset
			}
		}
	}()
}

func (e *consoleEnv) overviewPage(ctx context.Context) {
	e.do(ctx, "overview", goTo("#/"), loaded("overview", 2),
		wait(`document.getElementById('main').innerText.includes('ready') && !document.getElementById('main').innerText.includes('sampling')`))
	e.shot(ctx, "overview")
}

var pgGIDRe = regexp.MustCompile(`^[0-9a-f_]+$`)

// makeInDoubt runs a global transaction whose PostgreSQL branch is rolled back by hand
// between its prepare and its commit, while the decision log is held (see the file comment).
func (e *consoleEnv) makeInDoubt(id string) {
	t := e.t
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lock, err := e.pg.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()
	if _, err := lock.ExecContext(ctx, "LOCK TABLE imago.xa_decisions IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		code int
		err  error
		body struct{ Status string }
	}
	done := make(chan answer, 1)
	go func() {
		var a answer
		a.code, a.err = consoleCall(e.url, consoleOpsToken, "POST", "/v1/global-transactions", map[string]any{
			"id": id,
			"steps": []map[string]any{
				{"resource": "wallet", "operation": "move", "params": map[string]any{"account": "alice", "delta": -10}},
				{"resource": "ledger", "operation": "move", "params": map[string]any{"account": "bob", "delta": 10}},
			},
			"messages": []map[string]any{{"topic": e.topic, "key": id, "value": map[string]any{"transfer": id, "amount": 10}}},
		}, &a.body)
		done <- a
	}()
	var gid string
	for gid == "" {
		err := e.pg.QueryRowContext(ctx, "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()").Scan(&gid)
		if err != nil && err != sql.ErrNoRows {
			t.Fatal(err)
		}
		if gid == "" {
			select {
			case a := <-done:
				t.Fatalf("global transaction %s answered %d %+v before its branch was prepared", id, a.code, a.body)
			case <-time.After(20 * time.Millisecond): // polling pg_prepared_xacts
			}
		}
	}
	if !pgGIDRe.MatchString(gid) {
		t.Fatalf("unexpected gid %q", gid)
	}
	if _, err := e.pg.ExecContext(ctx, "ROLLBACK PREPARED '"+gid+"'"); err != nil { // a gid is literal SQL only
		t.Fatal(err)
	}
	if err := lock.Commit(); err != nil {
		t.Fatal(err)
	}
	a := <-done
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.code != 409 || a.body.Status != "in_doubt" {
		t.Fatalf("global transaction %s: %d %+v, want 409 in_doubt", id, a.code, a.body)
	}
}

func (e *consoleEnv) xaPage(ctx context.Context) {
	t := e.t
	// A broker branch left prepared, as an external transaction manager would between phases.
	xid := map[string]any{"format_id": 4711, "gtrid": fmt.Sprintf("%x", "tm-"+e.sfx), "bqual": fmt.Sprintf("%x", "broker")}
	for _, step := range []struct {
		path string
		body map[string]any
	}{
		{"/v1/xa/start", map[string]any{"xid": xid, "flags": "noflags"}},
		{"/v1/xa/messages", map[string]any{"xid": xid, "messages": []map[string]any{{"topic": e.topic, "value": map[string]any{"xa": true}}}}},
		{"/v1/xa/end", map[string]any{"xid": xid, "flags": "success"}},
		{"/v1/xa/prepare", map[string]any{"xid": xid}},
	} {
		if code := consoleAPI(t, e.url, consoleOpsToken, "POST", step.path, step.body, nil); code != 200 {
			t.Fatalf("%s: %d", step.path, code)
		}
	}
	t.Cleanup(func() {
		consoleAPI(t, e.url, consoleOpsToken, "POST", "/v1/xa/rollback", map[string]any{"xid": xid}, nil)
	})
	e.do(ctx, "XA page", goTo("#/xa"), loaded("xa", 1),
		wait(fmt.Sprintf(`document.getElementById('main').innerText.includes(%q)`, "tm-"+e.sfx)))
	e.shot(ctx, "xa")
	e.do(ctx, "outbox page", goTo("#/outbox"), loaded("outbox", 1))
	e.shot(ctx, "outbox")
}

func (e *consoleEnv) resolveThroughUI(ctx context.Context) {
	t := e.t
	id := e.indoubtA
	btn := fmt.Sprintf(`button[data-resolve="commit"][data-id=%q]`, id)
	e.do(ctx, "global transactions page lists the in-doubt ones", goTo("#/global"), loaded("global", 1),
		wait(`document.querySelector('[data-count="in_doubt"]').textContent === '2'`),
		wait(fmt.Sprintf(`document.querySelector(%q) && !document.querySelector(%q).disabled`, btn, btn)))
	e.shot(ctx, "global")
	// Without a mouse: focus the button, Enter; the dialog takes the focus; Enter submits.
	e.do(ctx, "resolve through the UI",
		chromedp.Focus(chromedp.CSS(btn)),
		chromedp.KeyEvent("\r"),
		wait(`document.getElementById('resolve-dialog').open && document.activeElement.id === 'resolve-confirm'`),
		chromedp.SendKeys(chromedp.ID("resolve-confirm"), id[:len(id)-1]), // not yet the id: still disabled
		wait(`document.getElementById('resolve-submit').disabled`),
		chromedp.SendKeys(chromedp.ID("resolve-confirm"), id[len(id)-1:]),
		chromedp.SendKeys(chromedp.ID("resolve-operator"), "alice"),
		wait(`!document.getElementById('resolve-submit').disabled`),
	)
	e.shot(ctx, "resolve")
	e.do(ctx, "resolved", chromedp.KeyEvent("\r"), // focus is in the operator field: Enter submits the form
		wait(fmt.Sprintf(`(document.querySelector('[data-resolved-by=%q]') || {}).textContent`, id)))
	// The API says so too: resolved by the ops token for operator alice, then committed by recovery.
	var tx struct {
		Status     string  `json:"status"`
		ResolvedBy string  `json:"resolved_by"`
		DecidedAt  *string `json:"decided_at"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code := consoleAPI(t, e.url, consoleOpsToken, "GET", "/v1/global-transactions/"+id, nil, &tx); code != 200 {
			t.Fatalf("get %s: %d", id, code)
		}
		if tx.Status == "committed" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the status recovery sets
	}
	if tx.Status != "committed" || !strings.HasPrefix(tx.ResolvedBy, "ops (operator alice) from ") || tx.DecidedAt == nil {
		t.Fatalf("after the UI's resolve: %+v", tx)
	}
	var bal int64
	if err := e.my.QueryRow("SELECT balance FROM " + e.wallet + " WHERE id = 'alice'").Scan(&bal); err != nil || bal != 980 {
		t.Errorf("wallet balance %d (%v), want 980: both transactions' MariaDB branches committed", bal, err)
	}
	e.do(ctx, "resolved list", goTo("#/global"), loaded("global", 1),
		wait(`document.querySelector('[data-count="in_doubt"]').textContent === '1'`),
		wait(fmt.Sprintf(`document.getElementById('main').innerText.includes(%q)`, "ops (operator alice)")))
	e.shot(ctx, "resolved")
	e.globalFromCounts(ctx)
}

// globalFromCounts: the global transactions page takes its numbers from the list's counts
// (every retained transaction), its most recent rows from order=newest and its resolved
// rows from resolved=true, in small answers: none of its requests asks for 10,000 rows. With
// more transactions than its most recent table shows, it says the table is cut.
func (e *consoleEnv) globalFromCounts(ctx context.Context) {
	t := e.t
	// matchesAPI waits until the page shows the API's counts and newest transaction.
	matchesAPI := func(what string, truncated bool) {
		var list struct {
			Counts       map[string]int `json:"counts"`
			Transactions []struct {
				ID string `json:"id"`
			} `json:"transactions"`
		}
		if code := consoleAPI(t, e.url, consoleOpsToken, "GET", "/v1/global-transactions?order=newest&limit=1", nil, &list); code != 200 ||
			len(list.Counts) != 7 || len(list.Transactions) != 1 {
			t.Fatalf("newest global transaction: %d %+v, want one with counts by status", code, list)
		}
		counts, _ := json.Marshal(list.Counts)
		cut := `!document.querySelector('[data-truncated="recent"]')`
		if truncated {
			cut = `/^The newest 15 of \d+ retained\.$/.test(document.querySelector('[data-truncated="recent"]')?.textContent)`
		}
		e.do(ctx, what,
			js(`performance.setResourceTimingBufferSize(10000), performance.clearResourceTimings()`),
			wait(fmt.Sprintf(`Object.entries(%s).every(([s, n]) => document.querySelector('[data-count="' + s + '"]')?.textContent === String(n))`, counts)),
			wait(fmt.Sprintf(`document.querySelector('[data-recent]')?.dataset.recent === %q`, list.Transactions[0].ID)),
			wait(fmt.Sprintf(`document.querySelector('[data-resolved-row]')?.dataset.resolvedRow === %q`, e.indoubtA)),
			wait(cut),
			// A refresh after the clear: its requests, all of them small.
			wait(`(() => { const u = performance.getEntriesByType('resource').map((r) => r.name).filter((n) => n.includes('/v1/global-transactions?'));
				return u.some((n) => n.includes('order=newest&limit=15')) && u.some((n) => n.includes('resolved=true')) && !u.some((n) => n.includes('limit=10000')); })()`))
	}
	matchesAPI("counts, most recent and resolved rows from counts, order=newest and resolved=true", false)
	// 16 more (messages only: the broker's branch alone), 18 in all: the most recent table
	// shows the newest 15 and says so.
	for i := range 16 {
		id := fmt.Sprintf("recent-%s-%02d", e.sfx, i)
		if code := consoleAPI(t, e.url, consoleOpsToken, "POST", "/v1/global-transactions", map[string]any{"id": id,
			"messages": []map[string]any{{"topic": e.topic, "key": id, "value": map[string]any{"n": i}}}}, nil); code != 200 {
			t.Fatalf("global transaction %s: %d", id, code)
		}
	}
	matchesAPI("more transactions than the most recent table shows", true)
}

func (e *consoleEnv) readerCannotResolve(ctx context.Context) {
	t := e.t
	btn := fmt.Sprintf(`button[data-resolve="commit"][data-id=%q]`, e.indoubtB)
	e.do(ctx, "a consume-only token sees the in-doubt list, its resolve buttons disabled", goTo("#/global"), loaded("global", 1),
		wait(fmt.Sprintf(`document.querySelector(%q) && document.querySelector(%q).disabled`, btn, btn)))
	if code := consoleAPI(t, e.url, consoleReaderToken, "POST", "/v1/global-transactions/"+e.indoubtB+"/resolve",
		map[string]string{"decision": "commit"}, nil); code != 403 {
		t.Errorf("resolve with a consume-only token: %d, want 403", code)
	}
}
