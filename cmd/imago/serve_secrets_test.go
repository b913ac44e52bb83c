package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeNeverLogsDSNPasswords: a PostgreSQL DSN that the driver cannot parse (here an
// sslmode typo) is refused at start with exit 2, and neither that refusal nor any log line
// before it holds the password. The driver's own parse error quotes the DSN and masks the
// password only in the forms it recognises: it leaves "password = secret" (spaces around
// "=", as libpq allows) whole, and of a URL password holding an unescaped "@" it masks only
// what precedes the last "@".
func TestServeNeverLogsDSNPasswords(t *testing.T) {
	tests := []struct{ name, dsn string }{
		{name: "keyword form with spaces", dsn: "host=127.0.0.1 port=1 user=u password = Pw0SECRETPW dbname=x sslmode=requre"},
		{name: "URL with @ in the password", dsn: "postgres://u:Pw0@SECRETPW@127.0.0.1:1/x?sslmode=requre"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "imago.yaml")
			body := "resources:\n  ledger: {driver: postgres}\n" +
				"outbox:\n  - {name: orders, resource: ledger, table: imago.outbox}\n"
			if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := imagoCmd("serve", "--config", cfg, "--data-dir", filepath.Join(dir, "data"),
				"--http-addr", "127.0.0.1:0", "--protocol-addr", "127.0.0.1:0")
			cmd.Env = append(cmd.Env, "IMAGO_RESOURCES_LEDGER_DSN="+tt.dsn)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second): // long enough for the relay and the recovery scan to log
				cmd.Process.Kill()
				err = <-done
			}
			if strings.Contains(out.String(), "SECRETPW") {
				t.Errorf("the output holds the DSN's password:\n%s", out.String())
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != exitUsage {
				t.Fatalf("want exit code %d (a DSN that cannot be parsed), got %v:\n%s", exitUsage, err, out.String())
			}
			if !strings.Contains(out.String(), "resources.ledger") || !strings.Contains(out.String(), "PostgreSQL DSN") {
				t.Errorf("the refusal does not name the resource and the DSN:\n%s", out.String())
			}
		})
	}
}
