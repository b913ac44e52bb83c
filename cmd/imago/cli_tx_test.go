package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestCLITransactions: tx begin/add/commit/rollback/status against a real server, with the
// exit codes scripts test.
func TestCLITransactions(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	must := func(want int, stdin string, args ...string) string {
		t.Helper()
		code, stdout, stderr := imago(t, srv, stdin, args...)
		if code != want {
			t.Fatalf("imago %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, stdout, stderr)
		}
		return stdout
	}
	must(0, "", "topics", "create", "wallet", "--partitions", "1")
	id := strings.TrimSpace(must(0, "", "tx", "begin", "--timeout", "1m"))
	if id == "" {
		t.Fatal("tx begin printed no id")
	}
	if out := must(0, "", "tx", "add", id, "--topic", "wallet", "--input", "json", `{"account":"A","amount":-100}`); !strings.Contains(out, "holds 1 messages") {
		t.Fatalf("tx add: %s", out)
	}
	if out := must(0, `{"account":"B","amount":100}`+"\n", "tx", "add", id, "--topic", "wallet", "--input", "json", "--key-field", "account"); !strings.Contains(out, "holds 2 messages") {
		t.Fatalf("tx add from stdin: %s", out)
	}
	if out := must(0, "", "consume", "wallet"); out != "" {
		t.Fatalf("open transaction visible: %q", out)
	}
	var st struct {
		State    string `json:"state"`
		Messages int    `json:"messages"`
	}
	if err := json.Unmarshal([]byte(must(0, "", "tx", "status", id, "-o", "json")), &st); err != nil || st.State != "open" || st.Messages != 2 {
		t.Fatalf("tx status -o json: %+v %v", st, err)
	}
	if out := must(0, "", "tx", "commit", id); out != "topic=wallet partition=0 offset=0\ntopic=wallet partition=0 offset=1\n" {
		t.Fatalf("tx commit: %q", out)
	}
	if out := must(0, "", "consume", "wallet", "--format", "offsets"); out != "0\t0\t-\t{\"account\":\"A\",\"amount\":-100}\n0\t1\tB\t{\"account\":\"B\",\"amount\":100}\n" {
		t.Fatalf("consume --format offsets: %q", out)
	}
	// Committed: a commit again (by a script whose first commit ended with the outcome unknown)
	// prints the same positions; a rollback is refused.
	if out := must(0, "", "tx", "commit", id); out != "topic=wallet partition=0 offset=0\ntopic=wallet partition=0 offset=1\n" {
		t.Fatalf("tx commit again: %q", out)
	}
	must(exitConflict, "", "tx", "rollback", id)   // not open any more
	must(exitNotFound, "", "tx", "status", "00ff") // unknown
	id2 := strings.TrimSpace(must(0, "", "tx", "begin"))
	must(0, "", "tx", "add", id2, "--topic", "wallet", "never")
	must(0, "", "tx", "rollback", id2)
	if out := must(0, "", "tx", "status", id2); !strings.Contains(out, "rolled_back") {
		t.Fatalf("status after rollback: %s", out)
	}
	must(exitConflict, "", "tx", "commit", id2)                                         // rolled back: not open any more
	must(exitUsage, "", "tx", "add", id2, "x")                                          // no --topic
	must(exitUsage, "", "tx", "add", id2, "--topic", "wallet", "--key-field", "k", "x") // --key-field without json
	must(exitNotFound, "", "tx", "add", id2+"00", "--topic", "wallet", "x")             // unknown transaction
	must(exitUnavailable, "", "--server", "http://127.0.0.1:1", "tx", "status", "00ff") // nobody there
	if out := must(0, "", "--help"); !strings.Contains(out, "3  not found") || !strings.Contains(out, "imago completion bash") {
		t.Fatalf("--help does not document exit codes and completion:\n%s", out)
	}
}

// TestCLIXA: xa recover lists a prepared branch (text and JSON), the heuristic decisions
// need --heuristic, and the transaction manager's later commit learns of them.
func TestCLIXA(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	ctx := context.Background()
	c := srv.client()
	if _, err := c.CreateTopic(ctx, "settlement", client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	rm := c.NewXAResource()
	prepare := func(g string) client.Xid {
		x := client.Xid{FormatID: 1, Gtrid: []byte(g), Bqual: []byte("b")}
		for _, err := range []error{rm.Start(ctx, x, ""), rm.Publish(ctx, x, client.To("settlement", client.Text(g))), rm.End(ctx, x, client.TMSuccess)} {
			if err != nil {
				t.Fatal(err)
			}
		}
		if _, err := rm.Prepare(ctx, x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	a, b := prepare("tx-a"), prepare("tx-b")
	code, out, stderr := imago(t, srv, "", "xa", "recover")
	if code != 0 || out != a.String()+"\n"+b.String()+"\n" {
		t.Fatalf("xa recover: %d %q %s", code, out, stderr)
	}
	code, out, _ = imago(t, srv, "", "xa", "recover", "-o", "json")
	var rec struct {
		Xids []struct {
			Xid   string `json:"xid"`
			Gtrid string `json:"gtrid"`
		} `json:"xids"`
	}
	if err := json.Unmarshal([]byte(out), &rec); code != 0 || err != nil || len(rec.Xids) != 2 || rec.Xids[0].Xid != a.String() || rec.Xids[0].Gtrid != "74782d61" {
		t.Fatalf("xa recover -o json: %d %v %s", code, err, out)
	}
	if code, _, stderr := imago(t, srv, "", "xa", "commit", a.String()); code != exitUsage || !strings.Contains(stderr, "--heuristic") {
		t.Fatalf("commit without --heuristic: %d %s", code, stderr)
	}
	if code, _, _ := imago(t, srv, "", "xa", "commit", "--heuristic", "XID:1:zz:00"); code != exitUsage {
		t.Fatalf("bad xid: exit %d", code)
	}
	if code, _, _ := imago(t, srv, "", "xa", "commit", "--heuristic", "XID:1:0abc:00"); code != exitNotFound {
		t.Fatalf("unknown xid: exit %d", code)
	}
	if code, out, stderr := imago(t, srv, "", "xa", "commit", "--heuristic", a.String()); code != 0 || !strings.Contains(out, "heuristically committed") {
		t.Fatalf("heuristic commit: %d %s %s", code, out, stderr)
	}
	if code, _, stderr := imago(t, srv, "", "xa", "rollback", "--heuristic", b.String()); code != 0 {
		t.Fatalf("heuristic rollback: %d %s", code, stderr)
	}
	if code, _, _ := imago(t, srv, "", "xa", "rollback", "--heuristic", b.String()); code != exitConflict {
		t.Fatalf("a second decision: exit %d, want %d", code, exitConflict)
	}
	if _, err := rm.Commit(ctx, a, false); !client.IsXACode(err, client.XAHeurCom) {
		t.Fatalf("manager's commit after a heuristic commit: %v", err)
	}
	if _, err := rm.Commit(ctx, b, false); !client.IsXACode(err, client.XAHeurRB) {
		t.Fatalf("manager's commit after a heuristic rollback: %v", err)
	}
	for _, x := range []client.Xid{a, b} {
		if code, _, stderr := imago(t, srv, "", "xa", "forget", x.String()); code != 0 {
			t.Fatalf("forget: %d %s", code, stderr)
		}
	}
	if code, out, _ := imago(t, srv, "", "xa", "recover"); code != 0 || out != "" {
		t.Fatalf("recover after forget: %d %q", code, out)
	}
	if code, out, _ := imago(t, srv, "", "consume", "settlement"); code != 0 || out != "tx-a\n" {
		t.Fatalf("after heuristic commit of a and rollback of b: %q", out)
	}
}

// TestCLIStats: stats over HTTP and over the text protocol door, text and JSON.
func TestCLIStats(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	if code, _, stderr := imago(t, srv, "", "produce", "--help"); code != 0 {
		t.Fatal(stderr)
	}
	code, out, stderr := imago(t, srv, "", "stats")
	if code != 0 || !strings.Contains(out, "messages_in") || !strings.Contains(out, "fsyncs") {
		t.Fatalf("stats: %d %s %s", code, out, stderr)
	}
	code, out, _ = imago(t, srv, "", "stats", "-o", "json")
	var st client.Stats
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil || st.UptimeSeconds <= 0 {
		t.Fatalf("stats -o json: %v %s", err, out)
	}
	code, out, stderr = imago(t, srv, "", "stats", "--protocol", "--protocol-addr", srv.Protocol)
	if code != 0 || !strings.Contains(out, "curr_connections") || !strings.Contains(out, "uptime") {
		t.Fatalf("stats --protocol: %d %s %s", code, out, stderr)
	}
	code, out, _ = imago(t, srv, "", "stats", "--protocol", "--protocol-addr", srv.Protocol, "-o", "json", "transactions")
	var m map[string]string
	if err := json.Unmarshal([]byte(out), &m); code != 0 || err != nil || m["prepared"] == "" {
		t.Fatalf("stats --protocol transactions -o json: %v %s", err, out)
	}
	if code, _, _ := imago(t, srv, "", "stats", "topics"); code != exitUsage {
		t.Fatalf("an item without --protocol: exit %d", code)
	}
	if code, _, _ := imago(t, srv, "", "stats", "--protocol", "--protocol-addr", srv.Protocol, "nonsense"); code != exitUsage {
		t.Fatalf("unknown item: exit %d", code)
	}
	if code, _, _ := imago(t, srv, "", "stats", "--protocol", "--protocol-addr", "127.0.0.1:1"); code != exitUnavailable {
		t.Fatalf("door not there: exit %d", code)
	}
}

// TestCLITailGroupAndCompletion: tail follows from the end; consume --group commits what it
// printed so the next run goes on from there; topic names complete from the server.
func TestCLITailGroupAndCompletion(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	if code, _, stderr := imago(t, srv, "", "topics", "create", "events"); code != 0 {
		t.Fatal(stderr)
	}
	if code, _, stderr := imago(t, srv, "", "produce", "events", "old"); code != 0 {
		t.Fatal(stderr)
	}
	done := imagoAsync(t, srv, "tail", "events", "--max", "1", "--wait", "5s")
	// tail starts at the end as it was when it started; produce until it prints (it may not
	// have read the end yet when the first message goes in, and "old" must never show).
	var got string
	for got == "" {
		if code, _, stderr := imago(t, srv, "", "produce", "events", "new"); code != 0 {
			t.Fatal(stderr)
		}
		select {
		case out := <-done:
			got = out.stdout + out.stderr
		case <-time.After(300 * time.Millisecond):
		}
	}
	if got != "new\n" {
		t.Fatalf("tail printed %q", got)
	}

	code, out, stderr := imago(t, srv, "", "consume", "events", "--group", "ops", "--max", "2")
	if code != 0 || out != "old\nnew\n" {
		t.Fatalf("consume --group: %d %q %s", code, out, stderr)
	}
	code, out, stderr = imago(t, srv, "", "consume", "events", "--group", "ops")
	if code != 0 || strings.Contains(out, "old") || (out != "" && strings.Count(out, "new") != strings.Count(out, "\n")) {
		t.Fatalf("consume --group after a commit: %d %q %s", code, out, stderr)
	}
	if code, out, _ := imago(t, srv, "", "consume", "events", "--group", "ops"); code != 0 || out != "" {
		t.Fatalf("consume --group with everything committed: %q", out)
	}
	if code, _, _ := imago(t, srv, "", "consume", "events", "--group", "ops", "--from", "12"); code != exitUsage {
		t.Fatalf("--group with an offset: exit %d", code)
	}

	code, out, _ = imago(t, srv, "", "__complete", "consume", "ev")
	if code != 0 || !strings.Contains(out, "events") {
		t.Fatalf("completion of a topic: %q", out)
	}
	code, out, _ = imago(t, srv, "", "completion", "bash")
	if code != 0 || !strings.Contains(out, "bash completion") {
		t.Fatalf("completion bash: %d %.200s", code, out)
	}
}

// TestTxAddLostAnswerIsNotRetryLater: a `tx add` whose answer is lost (the server added the
// messages, the connection closed before the answer came back) must not exit 5, "the same
// command may succeed later": run again, it adds the messages a second time and the commit
// publishes both copies. A connection refused added nothing, and stays exit 5. The proxy in
// front of the real server loses the answer on purpose.
func TestTxAddLostAnswerIsNotRetryLater(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	if code, _, stderr := imago(t, srv, "", "topics", "create", "wallet", "--partitions", "1"); code != exitOK {
		t.Fatalf("create: %d %s", code, stderr)
	}
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/messages") {
			rp.ServeHTTP(w, r)
			return
		}
		rp.ServeHTTP(httptest.NewRecorder(), r) // the real server adds the messages
		conn, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		conn.Close() // and its answer is lost
	}))
	defer proxy.Close()

	code, out, stderr := imago(t, srv, "", "tx", "begin")
	if code != exitOK {
		t.Fatalf("tx begin: %d %s", code, stderr)
	}
	id := strings.TrimSpace(out)
	code, _, stderr = imago(t, &serverProc{URL: proxy.URL}, "", "tx", "add", id, "--topic", "wallet", "debit-A-100")
	var st struct {
		Messages int `json:"messages"`
	}
	if _, out, _ := imago(t, srv, "", "tx", "status", id, "-o", "json"); json.Unmarshal([]byte(out), &st) != nil || st.Messages != 1 {
		t.Fatalf("the transaction holds %d messages, want 1: %s", st.Messages, out)
	}
	if code == exitOK || code == exitUnavailable {
		t.Errorf("tx add with its answer lost: exit %d; a rerun would add the message twice\nstderr: %s", code, stderr)
	}
	if !strings.Contains(stderr, "tx status "+id) {
		t.Errorf("tx add with its answer lost does not say how to find out: %s", stderr)
	}

	proxy.Close()
	if code, _, stderr := imago(t, &serverProc{URL: proxy.URL}, "", "tx", "add", id, "--topic", "wallet", "x"); code != exitUnavailable {
		t.Errorf("tx add to a closed port: exit %d, want %d (nothing added): %s", code, exitUnavailable, stderr)
	}
}
