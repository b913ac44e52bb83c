package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/imagomq/imago/client"
)

// imagoToFile runs `imago --server srv consume ...` as a child process with its stdout on path
// (a redirect: `imago consume ... > path`) and returns its exit code and stderr.
func imagoToFile(t *testing.T, srv *serverProc, path string, args ...string) (int, string) {
	t.Helper()
	out, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("open %s: %v", path, err)
	}
	defer out.Close()
	var stderr strings.Builder
	cmd := imagoCmd(append([]string{"--server", srv.URL}, args...)...)
	cmd.Stdout, cmd.Stderr = out, &stderr
	_ = cmd.Run()
	return cmd.ProcessState.ExitCode(), stderr.String()
}

// TestConsumeWriteErrorIsAFailure: `imago consume ... > file` on a full disk (/dev/full) wrote
// nothing; the command must not exit 0, which tells a script the messages are in the file.
// With --group the offsets of what could not be written stay uncommitted.
func TestConsumeWriteErrorIsAFailure(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	if code, _, stderr := imago(t, srv, "", "topics", "create", "pay", "--partitions", "1"); code != exitOK {
		t.Fatalf("create: %d %s", code, stderr)
	}
	if code, _, stderr := imago(t, srv, "", "produce", "pay", "a", "b", "c"); code != exitOK {
		t.Fatalf("produce: %d %s", code, stderr)
	}
	for _, args := range [][]string{
		{"consume", "pay"},
		{"consume", "pay", "--max", "1"},
		{"consume", "pay", "--max", "3", "--format", "json"},
		{"consume", "pay", "--from", "1", "--max", "1", "--format", "offsets"},
		{"tail", "pay", "--from", "0", "--max", "2"},
		{"consume", "pay", "--group", "audit", "--max", "1"},
		{"consume", "pay", "--group", "audit"},
	} {
		code, stderr := imagoToFile(t, srv, "/dev/full", args...)
		if code != exitFailure || !strings.Contains(stderr, "no space left") {
			t.Errorf("imago %s > /dev/full: exit %d, want %d with the write error\nstderr: %s", strings.Join(args, " "), code, exitFailure, stderr)
		}
	}
	// Nothing was written: the group committed nothing and reads everything.
	g, err := srv.client().GroupOffsets(t.Context(), "audit")
	if err != nil && !client.IsStatus(err, 404) {
		t.Fatal(err)
	}
	if g != nil {
		for _, o := range g.Offsets {
			if o.Offset != 0 {
				t.Errorf("group audit committed %s/%d at %d after a failed write", o.Topic, o.Partition, o.Offset)
			}
		}
	}
	if code, out, stderr := imago(t, srv, "", "consume", "pay", "--group", "audit"); code != exitOK || out != "a\nb\nc\n" {
		t.Errorf("consume --group after the failed writes: exit %d %q %s", code, out, stderr)
	}
}

// TestConsumeGroupCommitFailureIsNotRetryLater: consume --group printed the messages, and the
// commit of their offsets failed (503 injected by a proxy in front of the real server). The
// group has not committed them, so the next run prints them again: exit 5, "the same command
// may succeed later", would have a script that reruns on 5 write them twice. The command exits
// 1 and says so; stdout holds what was printed.
func TestConsumeGroupCommitFailureIsNotRetryLater(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	if code, _, stderr := imago(t, srv, "", "topics", "create", "pay", "--partitions", "1"); code != exitOK {
		t.Fatalf("create: %d %s", code, stderr)
	}
	if code, _, stderr := imago(t, srv, "", "produce", "pay", "a", "b"); code != exitOK {
		t.Fatalf("produce: %d %s", code, stderr)
	}
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/offsets") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"error":{"code":"not_ready","message":"offset store unavailable (injected)"}}` + "\n"))
			return
		}
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()

	code, out, stderr := imago(t, &serverProc{URL: proxy.URL}, "", "consume", "pay", "--group", "audit")
	if out != "a\nb\n" {
		t.Fatalf("consume --group printed %q", out)
	}
	if code != exitFailure || !strings.Contains(stderr, "prints them again") {
		t.Errorf("consume --group whose commit failed: exit %d, want %d saying the next run prints the messages again\nstderr: %s", code, exitFailure, stderr)
	}
	if code, out, _ := imago(t, srv, "", "consume", "pay", "--group", "audit"); code != exitOK || out != "a\nb\n" {
		t.Errorf("the next run: exit %d %q (the commit failed: it prints them again)", code, out)
	}
}

// TestConsumeJSONFraming: --format json is the format a script can split on newlines: a value
// with newlines, tabs or bytes that are not UTF-8 is still one line per message, and decodes
// back to what was produced.
func TestConsumeJSONFraming(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	if code, _, stderr := imago(t, srv, "", "topics", "create", "pay", "--partitions", "1"); code != exitOK {
		t.Fatalf("create: %d %s", code, stderr)
	}
	in := `{"key":"k\n1","value":"line 1\nline 2\tend"}` + "\n" + `{"value_base64":"/w0K/g=="}` + "\n"
	if code, _, stderr := imago(t, srv, in, "produce", "pay", "--input", "message"); code != exitOK {
		t.Fatalf("produce: %d %s", code, stderr)
	}
	for _, args := range [][]string{{"consume", "pay", "--format", "json"}, {"consume", "pay", "--group", "g", "--format", "json"}} {
		code, out, stderr := imago(t, srv, "", args...)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if code != exitOK || len(lines) != 2 {
			t.Fatalf("imago %s: exit %d, %d lines for 2 messages: %q %s", strings.Join(args, " "), code, len(lines), out, stderr)
		}
		var m0, m1 client.FetchedMessage
		if err := json.Unmarshal([]byte(lines[0]), &m0); err != nil || m0.Key == nil || *m0.Key != "k\n1" || string(m0.Value) != `"line 1\nline 2\tend"` {
			t.Errorf("first line %q: %v", lines[0], err)
		}
		if err := json.Unmarshal([]byte(lines[1]), &m1); err != nil || m1.ValueBase64 == nil || *m1.ValueBase64 != "/w0K/g==" {
			t.Errorf("second line %q: %v", lines[1], err)
		}
	}
}
