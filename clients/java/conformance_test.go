// Package javaharness_test builds the JDK-only XAResource of clients/java with javac and runs
// its conformance harness (io.imago.xa.Conformance) against a real Imago served in-process,
// the real PostgreSQL and the real MariaDB of scripts/services.sh; example_test.go runs the
// settlement example of examples/java-xa the same way, and jta_test.go runs the JTA scenarios
// and the JTA example under Bitronix (these restart no database).
//
// It needs javac and java, and Debian's JDBC drivers (scripts/java-deps.sh installs them).
// Without them the tests skip, unless IMAGO_REQUIRE_SERVICES=1 (make test), where they fail.
//
// The harness restarts PostgreSQL and MariaDB (the "recover after server restart" scenario),
// so these tests must not run beside other tests that use those servers: make test runs this
// package on its own, after the others.
package javaharness_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

// The JDBC drivers, from Debian's libpostgresql-jdbc-java and libmariadb-java.
const (
	pgJar      = "/usr/share/java/postgresql.jar"
	mariadbJar = "/usr/share/java/mariadb-java-client.jar"
)

// javaTools finds java and javac and the driver jars, or skips (fails with
// IMAGO_REQUIRE_SERVICES=1) with what to do.
func javaTools(t *testing.T) (java, javac string) {
	t.Helper()
	var missing []string
	java, err := exec.LookPath("java")
	if err != nil {
		missing = append(missing, "java")
	}
	javac, err = exec.LookPath("javac")
	if err != nil {
		missing = append(missing, "javac")
	}
	for _, jar := range []string{pgJar, mariadbJar} {
		if _, err := os.Stat(jar); err != nil {
			missing = append(missing, jar)
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("the Java XA harness needs %s; run `bash scripts/java-deps.sh` (installs the Debian packages)",
			strings.Join(missing, ", "))
		if testenv.Required() {
			t.Fatalf("%s=1 but %s", testenv.EnvRequireServices, msg)
		}
		t.Skip("skipping: " + msg)
	}
	return java, javac
}

// jdbcURLs turns the services' DSNs (testenv) into JDBC URLs.
func jdbcURLs(t *testing.T) (pg, mariadb string) {
	t.Helper()
	pgDSN := testenv.PostgresDSN(t)
	u, err := url.Parse(pgDSN)
	if err != nil || u.Host == "" {
		t.Fatalf("%s=%q: not a postgres:// URL", testenv.EnvPostgresDSN, pgDSN)
	}
	q := url.Values{"user": {u.User.Username()}}
	if p, ok := u.User.Password(); ok {
		q.Set("password", p)
	}
	pg = "jdbc:postgresql://" + u.Host + u.Path + "?" + q.Encode()

	// go-sql-driver/mysql: user[:password]@tcp(host:port)/db[?params]
	myDSN := testenv.MySQLDSN(t)
	at := strings.LastIndex(myDSN, "@tcp(")
	end := strings.Index(myDSN, ")/")
	if at < 0 || end < at {
		t.Fatalf("%s=%q: want user[:password]@tcp(host:port)/db", testenv.EnvMySQLDSN, myDSN)
	}
	user, pass, hasPass := strings.Cut(myDSN[:at], ":")
	db, _, _ := strings.Cut(myDSN[end+2:], "?")
	q = url.Values{"user": {user}}
	if hasPass {
		q.Set("password", pass)
	}
	mariadb = "jdbc:mariadb://" + myDSN[at+5:end] + "/" + db + "?" + q.Encode()
	return pg, mariadb
}

// compileJava compiles the sources under dirs, each a directory or one .java file (with
// classpath), into a new directory.
func compileJava(t *testing.T, javac, classpath string, dirs ...string) string {
	t.Helper()
	out := t.TempDir()
	var srcs []string
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() && strings.HasSuffix(p, ".java") {
				srcs = append(srcs, p)
			}
			return err
		})
		if err != nil {
			t.Fatalf("find Java sources in %s: %v", d, err)
		}
	}
	args := []string{"-encoding", "UTF-8", "-Xlint:all", "-Werror", "-d", out}
	if classpath != "" {
		args = append(args, "-cp", classpath)
	}
	cmd := exec.Command(javac, append(args, srcs...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("javac %s: %v\n%s", strings.Join(dirs, " "), err, b)
	}
	return out
}

// imagoServer is a real broker and gateway, served on one loopback address across restarts.
type imagoServer struct {
	t    *testing.T
	dir  string
	addr string
	b    *broker.Broker
	gw   *gateway.Server
	srv  *http.Server
	done chan struct{}

	// requests counts the HTTP requests served, across restarts: a Java program asks for it
	// ("REQUESTS imago") to show that a call sent nothing.
	requests atomic.Int64
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startImago(t *testing.T) *imagoServer {
	t.Helper()
	// A port outside the ephemeral range (testenv.FreeAddr): no outgoing connection takes it
	// while the server is down between restarts.
	s := &imagoServer{t: t, dir: t.TempDir(), addr: testenv.FreeAddr(t)}
	if err := s.start(); err != nil {
		t.Fatalf("start imago: %v", err)
	}
	t.Cleanup(s.stop)
	return s
}

func (s *imagoServer) url() string { return "http://" + s.addr }

func (s *imagoServer) start() error {
	bo := broker.NewOptions(s.dir)
	bo.Logger = quietLogger()
	b, err := broker.Open(bo)
	if err != nil {
		return fmt.Errorf("open broker on %s: %w", s.dir, err)
	}
	gw, err := gateway.New(b, gateway.Options{Metrics: gateway.NewMetrics(prometheus.NewRegistry()), Logger: quietLogger()})
	if err != nil {
		b.Close()
		return fmt.Errorf("new gateway: %w", err)
	}
	// The same port after a restart: a client keeps the broker's address, as in production.
	var ln net.Listener
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err = net.Listen("tcp", s.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		gw.Close()
		b.Close()
		return fmt.Errorf("listen on %s: %w", s.addr, err)
	}
	s.addr = ln.Addr().String()
	s.b, s.gw = b, gw
	h := gw.Handler()
	count := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		h.ServeHTTP(w, r)
	})
	s.srv = &http.Server{Handler: count, ReadHeaderTimeout: 10 * time.Second}
	s.done = make(chan struct{})
	go func(srv *http.Server, done chan struct{}) {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.t.Errorf("serve imago: %v", err)
		}
	}(s.srv, s.done)
	return nil
}

// stop closes the gateway, the HTTP server and the broker (a clean restart's first half).
func (s *imagoServer) stop() {
	if s.b == nil {
		return
	}
	s.gw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.t.Errorf("shut down imago's HTTP server: %v", err)
	}
	<-s.done
	if err := s.b.Close(); err != nil {
		s.t.Errorf("close broker: %v", err)
	}
	s.b = nil
}

func (s *imagoServer) restart() error {
	s.stop()
	return s.start()
}

// javaRun runs a Java program; a line "RESTART imago" on its standard output restarts srv
// and answers READY on its standard input, and a line "REQUESTS imago" answers the number of
// requests srv has served. It returns the rest of the output and the error.
func javaRun(t *testing.T, ctx context.Context, srv *imagoServer, java string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, java, args...)
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start java: %v", err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if line == "RESTART imago" {
			answer := "READY"
			if err := srv.restart(); err != nil {
				t.Errorf("restart imago for the harness: %v", err)
				answer = "FAILED " + err.Error()
			}
			if _, err := io.WriteString(stdin, answer+"\n"); err != nil {
				t.Errorf("answer the harness: %v", err)
			}
			continue
		}
		if line == "REQUESTS imago" {
			if _, err := fmt.Fprintf(stdin, "%d\n", srv.requests.Load()); err != nil {
				t.Errorf("answer the program: %v", err)
			}
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
	}
	stdin.Close()
	err = cmd.Wait()
	if stderr.Len() > 0 {
		t.Logf("java standard error:\n%s", stderr.String())
	}
	return out.String(), err
}

var printMu sync.Mutex

// report logs text and prints it too, so that `go test -v` and CI logs show it.
func report(t *testing.T, title, text string) {
	t.Helper()
	t.Logf("%s:\n%s", title, text)
	printMu.Lock()
	defer printMu.Unlock()
	fmt.Printf("=== %s\n%s\n", title, text)
}

// TestJavaXAConformance runs the harness: the same XA calls against Imago, PostgreSQL and
// MariaDB, a side-by-side table, and a non-zero exit when Imago disagrees with the databases
// where they agree.
func TestJavaXAConformance(t *testing.T) {
	java, javac := javaTools(t)
	pgURL, myURL := jdbcURLs(t)
	classes := compileJava(t, javac, "", "src")
	srv := startImago(t)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := javaRun(t, ctx, srv, java,
		"-cp", strings.Join([]string{classes, pgJar, mariadbJar}, string(os.PathListSeparator)),
		"io.imago.xa.Conformance",
		"--imago", srv.url(), "--imago-restart", "stdio",
		"--pg", pgURL, "--mariadb", myURL)
	report(t, fmt.Sprintf("Java XA conformance (%.1fs)", time.Since(start).Seconds()), out)
	if err != nil {
		t.Fatalf("the conformance harness failed (%v); the table above says where Imago disagrees", err)
	}
	if !strings.Contains(out, "conformance: PASS") {
		t.Fatalf("the harness exited 0 without its PASS line")
	}
}
