package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagomq/imago/internal/testenv"
)

// TestServeRefusesNonLoopbackWithoutTokens: with no auth.tokens, serve refuses to listen on an
// address other than loopback, says why and how to fix it, exits 2 and touches nothing.
func TestServeRefusesNonLoopbackWithoutTokens(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  []string
	}{
		{name: "all interfaces", args: []string{"--http-addr", "0.0.0.0:0"}},
		{name: "empty host", args: []string{"--http-addr", ":0"}},
		{name: "ipv6 any", args: []string{"--http-addr", "[::]:0"}},
		{name: "from the environment", env: []string{"IMAGO_HTTP_ADDR=0.0.0.0:0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			cmd := imagoCmd(append([]string{"serve", "--data-dir", dataDir}, tt.args...)...)
			cmd.Env = append(cmd.Env, tt.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != exitUsage {
				t.Fatalf("want exit code %d, got %v; stderr:\n%s", exitUsage, err, stderr.String())
			}
			for _, want := range []string{"not a loopback address", "no auth.tokens are configured", "127.0.0.1", "configure auth.tokens"} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
				}
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("refused start created the data directory (%v)", err)
			}
		})
	}
}

// TestServeUsageErrors: configuration and flag problems exit 2 before anything is opened.
func TestServeUsageErrors(t *testing.T) {
	dir := t.TempDir()
	badKey := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badKey, []byte("http: {adress: 127.0.0.1:1}\n"), 0o600)
	// Named operations are compiled when the configuration is loaded: each bad one is named,
	// and nothing (not even the data directory) is opened.
	badOps := filepath.Join(dir, "badops.yaml")
	opsData := filepath.Join(dir, "never-created")
	os.WriteFile(badOps, []byte("data_dir: "+opsData+`
resources:
  wallet: {driver: mysql, dsn: "root@tcp(127.0.0.1:1)/test"}
operations:
  wallet.debit: {sql: "UPDATE w SET b = b - ? WHERE id = :account", expect_rows: 1}
  wallet.credit: {sql: "UPDATE w SET b = b + :amount", expect_rows: -1}
  bank.credit: {sql: "UPDATE w SET b = b + :amount"}
`), 0o600)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "unknown config key", args: []string{"serve", "--config", badKey}, want: `unknown field "adress"`},
		{name: "missing config file", args: []string{"serve", "--config", filepath.Join(dir, "nope.yaml")}, want: "nope.yaml"},
		{name: "bad log level", args: []string{"serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--log-level", "loud"}, want: "--log-level"},
		{name: "pprof off loopback", args: []string{"serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--pprof-addr", "0.0.0.0:0"}, want: "--pprof-addr 0.0.0.0:0: the profiler listens on loopback only"},
		{name: "unknown flag", args: []string{"serve", "--htp-addr", "x"}, want: "unknown flag"},
		{name: "stray argument", args: []string{"serve", "now"}, want: "takes no arguments"},
		{name: "unknown command", args: []string{"srve"}, want: "unknown command"},
		{name: "bad operation sql", args: []string{"serve", "--config", badOps}, want: "operations.wallet.debit.sql: '?' at byte 21"},
		{name: "bad operation expect_rows", args: []string{"serve", "--config", badOps}, want: "operations.wallet.credit.expect_rows -1"},
		{name: "operation on no resource", args: []string{"serve", "--config", badOps}, want: `operations.bank.credit: resource "bank" is not in resources`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), tt.args, strings.NewReader(""), &stdout, &stderr)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitUsage, stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.want) || !strings.Contains(stderr.String(), "--help") {
				t.Errorf("stderr does not say %q and point to --help:\n%s", tt.want, stderr.String())
			}
		})
	}
	if _, err := os.Stat(opsData); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a configuration with bad operations created the data directory: %v", err)
	}
}

func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"produce", "--help"}, {"consume", "--help"},
		{"topics", "create", "--help"}, {"bench", "produce", "--help"}, {"bench", "fetch", "--help"}, {"bench", "disk", "--help"}, {"bench", "offsets", "--help"}} {
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); code != exitOK {
			t.Errorf("%v: exit %d: %s", args, code, stderr.String())
		}
		if !strings.Contains(stdout.String(), "Examples:") {
			t.Errorf("%v: help has no examples:\n%s", args, stdout.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"version"}, nil, &stdout, &stderr); code != exitOK || !strings.HasPrefix(stdout.String(), "imago ") {
		t.Errorf("version: exit %d, %q", code, stdout.String())
	}
}

// TestServePprof: --pprof-addr serves Go's profiler on loopback, next to the API.
func TestServePprof(t *testing.T) {
	addr := testenv.FreeAddr(t)
	startServer(t, filepath.Join(t.TempDir(), "data"), "--pprof-addr", addr)
	resp, err := http.Get("http://" + addr + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "serve") {
		t.Fatalf("pprof cmdline: %d %q", resp.StatusCode, body)
	}
}
