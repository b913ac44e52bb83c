// Package exampletest runs the examples the way their READMEs do, against real services: it
// builds the imago binary and the examples' programs, gives each test databases of its own
// (so the examples' fixed table names never meet another test's), starts `imago serve` with an
// example's imago.yaml, and runs commands while keeping what they print.
//
// The databases are those of scripts/services.sh (internal/testenv); without them a test is
// skipped, or fails under IMAGO_REQUIRE_SERVICES=1.
package exampletest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib" // the pgx driver for database/sql

	"github.com/imagomq/imago/internal/testenv"
)

// Root is the module's root directory.
func Root(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Suffix returns a random suffix for names.
func Suffix(t testing.TB) string {
	var b [5]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// Build builds the Go package pkg (a path relative to the module root, "./cmd/imago") into a
// temporary directory and returns the binary's path.
func Build(t testing.TB, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = Root(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// Postgres creates a PostgreSQL database for the test (dropped at the end) and returns its URL.
func Postgres(t testing.TB) string {
	t.Helper()
	base := testenv.PostgresDSN(t)
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	name := "imago_example_" + Suffix(t)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// MySQL creates a MariaDB database for the test (dropped at the end) and returns its DSN.
func MySQL(t testing.TB) string {
	t.Helper()
	base := testenv.MySQLDSN(t)
	admin, err := sql.Open("mysql", base)
	if err != nil {
		t.Fatal(err)
	}
	name := "imago_example_" + Suffix(t)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
		admin.Close()
	})
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DBName = name
	return cfg.FormatDSN()
}

// ExecFile runs the statements of a .sql file (separated by ";" at the end of a line).
func ExecFile(t testing.TB, driver, dsn, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var stmt strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "--") {
			continue
		}
		stmt.WriteString(line + "\n")
		if strings.HasSuffix(strings.TrimSpace(line), ";") {
			if _, err := db.Exec(stmt.String()); err != nil {
				t.Fatalf("%s: %v\n%s", path, err, stmt.String())
			}
			stmt.Reset()
		}
	}
}

// Serve starts `imago serve` (binary imago) with the configuration file config ("" for none)
// and extra environment variables, on a port of its own and a fresh data directory, and
// returns its URL. It is stopped at the end of the test.
func Serve(t testing.TB, imago, config string, env ...string) string {
	t.Helper()
	dir := t.TempDir()
	ready := filepath.Join(dir, "ready")
	args := []string{"serve", "--data-dir", filepath.Join(dir, "data"), "--http-addr", "127.0.0.1:0",
		"--protocol-addr", "127.0.0.1:0", "--ready-file", ready}
	if config != "" {
		args = append(args, "--config", config)
	}
	p := Start(t, "", env, imago, args...)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
		}
		if p.Exited() || time.Now().After(deadline) {
			t.Fatalf("imago serve did not start; output:\n%s", p.Output())
		}
		time.Sleep(10 * time.Millisecond) // polling the ready file
	}
}

// Proc is a running command whose output (stdout and stderr) is kept.
type Proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// Start starts name with args in dir (the environment plus env), stopped at the end of the test.
func Start(t testing.TB, dir string, env []string, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{done: make(chan struct{})}
	p.cmd = exec.Command(name, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(name), p.Output())
		}
	})
	return p
}

func (p *Proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

// Output is what the command printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Exited reports whether the command has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the command to end (at most timeout) and returns its output.
func (p *Proc) Wait(t testing.TB, timeout time.Duration) string {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still running after %v; output:\n%s", p.cmd.Path, timeout, p.Output())
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%s exited %d; output:\n%s", p.cmd.Path, code, p.Output())
	}
	return p.Output()
}

// WaitLines waits until the output has n lines that contain substr, and returns them.
func (p *Proc) WaitLines(t testing.TB, substr string, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var lines []string
		sc := bufio.NewScanner(strings.NewReader(p.Output()))
		for sc.Scan() {
			if strings.Contains(sc.Text(), substr) {
				lines = append(lines, sc.Text())
			}
		}
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) || p.Exited() {
			t.Fatalf("waited for %d lines with %q, have %d; output:\n%s", n, substr, len(lines), p.Output())
		}
		time.Sleep(20 * time.Millisecond) // polling the output
	}
}

// Run runs a command to its end and returns its output; a non-zero exit fails the test.
func Run(t testing.TB, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
	return string(b)
}

// Query returns the first column of every row of q.
func Query(t testing.TB, driver, dsn, q string, args ...any) []string {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s sql.NullString
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s.String)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// CutAnswers starts an HTTP proxy in front of target (a URL) and returns its URL. A request
// for which cut returns true is forwarded and answered by the server as usual, then the
// client's connection is closed without the answer: the client cannot know whether it was
// applied, as when a connection breaks after the request was sent. The other requests pass
// through. (internal/faultproxy cuts bytes, not a chosen request after the server answered
// it; the server here is real, only the answer is lost.)
func CutAnswers(t testing.TB, target string, cut func(*http.Request) bool) string {
	t.Helper()
	to, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(to)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !cut(r) {
			rp.ServeHTTP(w, r)
			return
		}
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host, out.Host, out.RequestURI = to.Scheme, to.Host, to.Host, ""
		if resp, err := http.DefaultTransport.RoundTrip(out); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler) // closes the connection without an answer all the same
		}
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
