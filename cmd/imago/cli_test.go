package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// imago runs the command line in-process against srv and returns exit code, stdout and stderr.
func imago(t *testing.T, srv *serverProc, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"--server", srv.URL}, args...), strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// cliOutput is what a command line run in the background printed.
type cliOutput struct{ stdout, stderr string }

// imagoAsync runs the command line in the background against srv until it ends or 30 s pass,
// and sends what it printed on the channel.
func imagoAsync(t *testing.T, srv *serverProc, args ...string) <-chan cliOutput {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	done := make(chan cliOutput, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		run(ctx, append([]string{"--server", srv.URL}, args...), strings.NewReader(""), &stdout, &stderr)
		done <- cliOutput{stdout.String(), stderr.String()}
	}()
	return done
}

// TestCLIWalkthrough is the README's command-line walk-through against a real server.
func TestCLIWalkthrough(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	steps := []struct {
		args   []string
		stdin  string
		code   int
		stdout []string // substrings, in order
	}{
		{args: []string{"topics", "create", "settlement.transfers", "--partitions", "4"}, stdout: []string{"created topic settlement.transfers with 4 partitions"}},
		{args: []string{"topics", "create", "settlement.transfers", "--partitions", "4"}, stdout: []string{"exists"}},
		{args: []string{"topics", "create", "settlement.transfers", "--partitions", "2"}, code: exitConflict},
		{args: []string{"topics", "list"}, stdout: []string{"TOPIC", "settlement.transfers", "4"}},
		{args: []string{"produce", "settlement.transfers", "--partition", "0", "hello", "world"},
			stdout: []string{"partition=0 offset=0", "partition=0 offset=1"}},
		{args: []string{"produce", "settlement.transfers", "--partition", "0", "--input", "json"},
			stdin: `{"from":"A","to":"B","amount":100}` + "\n\n" + `42` + "\n", stdout: []string{"partition=0 offset=2", "partition=0 offset=3"}},
		{args: []string{"produce", "settlement.transfers", "--partition", "0", "--input", "json", "not json"}, code: exitFailure},
		{args: []string{"produce", "settlement.transfers", "--input", "message"},
			stdin: `{"key":"acct-42","value":{"n":1},"headers":{"h":"v"},"partition":1}` + "\n", stdout: []string{"partition=1 offset=0"}},
		{args: []string{"produce", "settlement.transfers", "--partition", "2", "--idempotency-key", "k-1", "once"}, stdout: []string{"partition=2 offset=0"}},
		{args: []string{"produce", "settlement.transfers", "--partition", "2", "--idempotency-key", "k-1", "once"}, stdout: []string{"partition=2 offset=0"}},
		{args: []string{"topics", "describe", "settlement.transfers"}, stdout: []string{"4 partitions", "PARTITION", "0", "4"}},
		{args: []string{"consume", "settlement.transfers", "--partition", "0"},
			stdout: []string{"hello\nworld\n{\"from\":\"A\",\"to\":\"B\",\"amount\":100}\n42\n"}},
		{args: []string{"consume", "settlement.transfers", "-p", "0", "--from", "1", "--max", "1"}, stdout: []string{"world\n"}},
		{args: []string{"consume", "settlement.transfers", "-p", "0", "--from", "latest"}},
		{args: []string{"consume", "settlement.transfers", "-p", "1", "--format", "json"}, stdout: []string{`"key":"acct-42"`, `"value":{"n":1}`, `"headers":{"h":"v"}`}},
		{args: []string{"consume", "settlement.transfers", "-p", "2"}, stdout: []string{"once\n"}},
		{args: []string{"consume", "settlement.transfers", "-p", "0", "--from", "99"}, code: exitFailure},
		{args: []string{"consume", "nope"}, code: exitNotFound},
		{args: []string{"consume", "settlement.transfers", "--from", "yesterday"}, code: exitUsage},
		{args: []string{"produce", "settlement.transfers"}, code: exitUsage},
	}
	for _, st := range steps {
		code, stdout, stderr := imago(t, srv, st.stdin, st.args...)
		if code != st.code {
			t.Fatalf("imago %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(st.args, " "), code, st.code, stdout, stderr)
		}
		rest := stdout
		for _, want := range st.stdout {
			i := strings.Index(rest, want)
			if i < 0 {
				t.Fatalf("imago %s: stdout lacks %q:\n%s", strings.Join(st.args, " "), want, stdout)
			}
			rest = rest[i+len(want):]
		}
		if st.code == exitOK && strings.Contains(st.args[0], "consume") && len(st.stdout) == 0 && stdout != "" {
			t.Fatalf("imago %s: want no output, got %q", strings.Join(st.args, " "), stdout)
		}
	}
	// The idempotent retry did not store a second copy.
	_, out, _ := imago(t, srv, "", "topics", "describe", "settlement.transfers", "-o", "json")
	var desc struct {
		Partitions []struct {
			EndOffset int64 `json:"end_offset"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal([]byte(out), &desc); err != nil || len(desc.Partitions) != 4 || desc.Partitions[2].EndOffset != 1 {
		t.Fatalf("describe -o json: %v %s", err, out)
	}
}

// TestConsumeFollow: --follow long-polls and prints a message produced after it started.
func TestConsumeFollow(t *testing.T) {
	srv := startServer(t, t.TempDir()+"/data")
	if code, _, stderr := imago(t, srv, "", "topics", "create", "tail"); code != 0 {
		t.Fatal(stderr)
	}
	done := imagoAsync(t, srv, "consume", "tail", "--from", "0", "--follow", "--max", "2", "--wait", "5s")
	time.Sleep(200 * time.Millisecond) // let the consumer reach its long-poll
	for _, v := range []string{"first", "second"} {
		if code, _, stderr := imago(t, srv, "", "produce", "tail", v); code != 0 {
			t.Fatal(stderr)
		}
	}
	if got := (<-done).stdout; got != "first\nsecond\n" {
		t.Fatalf("follow printed %q", got)
	}
}

// TestCLIToken: with auth.tokens configured the CLI needs --token or IMAGO_TOKEN, and the
// secret never shows up in the server's log.
func TestCLIToken(t *testing.T) {
	dir := t.TempDir()
	const secret = "s3cret-token-value-for-test"
	cfg := dir + "/imago.yaml"
	if err := os.WriteFile(cfg, []byte("auth:\n  tokens:\n    - {name: ops, token_env: TEST_IMAGO_OPS_TOKEN, produce: [\"*\"], consume: [\"*\"], admin: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServerEnv(t, dir+"/data", []string{"TEST_IMAGO_OPS_TOKEN=" + secret}, "--config", cfg, "--log-level", "debug")

	if code, _, stderr := imago(t, srv, "", "topics", "list"); code != exitDenied || !strings.Contains(stderr, "401") {
		t.Fatalf("without a token: exit %d, %s", code, stderr)
	}
	if code, _, stderr := imago(t, srv, "", "--token", "wrong", "topics", "list"); code != exitDenied || !strings.Contains(stderr, "401") {
		t.Fatalf("wrong token: exit %d, %s", code, stderr)
	}
	if code, _, stderr := imago(t, srv, "", "--token", secret, "topics", "create", "t"); code != exitOK {
		t.Fatalf("with --token: exit %d, %s", code, stderr)
	}
	t.Setenv("IMAGO_TOKEN", secret)
	if code, stdout, stderr := imago(t, srv, "", "topics", "list"); code != exitOK || !strings.Contains(stdout, "t") {
		t.Fatalf("with IMAGO_TOKEN: exit %d, %s", code, stderr)
	}
	srv.stop()
	if log, _ := os.ReadFile(srv.logPath); bytes.Contains(log, []byte(secret)) {
		t.Fatalf("the server log contains the token")
	}
}
