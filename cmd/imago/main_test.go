package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
)

// TestMain lets the test binary be the imago binary: with IMAGO_TEST_MAIN=1 in its environment
// it runs the command line instead of the tests. Tests use that to start real `imago serve`
// child processes (and kill them with SIGKILL) without building anything first.
func TestMain(m *testing.M) {
	if os.Getenv("IMAGO_TEST_MAIN") == "1" {
		os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// childEnv is the test's environment without IMAGO_* variables (they would change the child's
// configuration), plus IMAGO_TEST_MAIN=1.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IMAGO_") {
			env = append(env, kv)
		}
	}
	return append(append(env, "IMAGO_TEST_MAIN=1"), extra...)
}

// imagoCmd returns an exec.Cmd running `imago args...` as a child process.
func imagoCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = childEnv()
	cmd.SysProcAttr = childSysProcAttr()
	return cmd
}

// logShown keeps a failed test from printing the same server log once per restart.
var logShown sync.Map

// serverProc is a real `imago serve` child process on 127.0.0.1 with a port of its own.
type serverProc struct {
	t         *testing.T
	dataDir   string
	readyFile string
	logPath   string
	cmd       *exec.Cmd
	exited    chan struct{}
	waitErr   error
	URL       string
	Protocol  string // host:port of the text protocol door
}

// startServer starts `imago serve` on dataDir (created when missing) and waits until it has
// written its ready file. Its logs accumulate in dataDir/../serve.log, shown when a test fails.
func startServer(t *testing.T, dataDir string, extraArgs ...string) *serverProc {
	t.Helper()
	return startServerEnv(t, dataDir, nil, extraArgs...)
}

// startServerEnv is startServer with extra environment variables for the child.
func startServerEnv(t *testing.T, dataDir string, env []string, extraArgs ...string) *serverProc {
	t.Helper()
	dir := filepath.Dir(dataDir)
	s := &serverProc{
		t: t, dataDir: dataDir,
		readyFile: filepath.Join(dir, "ready"),
		logPath:   filepath.Join(dir, "serve.log"),
		exited:    make(chan struct{}),
	}
	os.Remove(s.readyFile)
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logFile, "----- start %s\n", time.Now().Format(time.RFC3339Nano))
	args := append([]string{"serve", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--protocol-addr", "127.0.0.1:0", "--ready-file", s.readyFile}, extraArgs...)
	s.cmd = imagoCmd(args...)
	s.cmd.Env = append(s.cmd.Env, env...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	start := time.Now()
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.kill()
		if _, shown := logShown.LoadOrStore(s.logPath, true); t.Failed() && !shown {
			t.Logf("server log (%s), last lines:\n%s", s.logPath, tail(s.logPath, 40))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if b, err := os.ReadFile(s.readyFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			s.URL = strings.TrimSpace(lines[0])
			for _, l := range lines[1:] {
				if a, ok := strings.CutPrefix(strings.TrimSpace(l), "protocol "); ok {
					s.Protocol = a
				}
			}
			break
		}
		select {
		case <-s.exited:
			t.Fatalf("imago serve exited before it was ready (%v); log:\n%s", s.waitErr, tail(s.logPath, 40))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("imago serve not ready after 60s; log:\n%s", tail(s.logPath, 40))
		}
	}
	t.Logf("imago serve pid %d ready at %s after %v", s.cmd.Process.Pid, s.URL, time.Since(start).Round(time.Millisecond))
	return s
}

func (s *serverProc) client() *client.Client { return client.New(s.URL) }

// kill sends SIGKILL and waits for the process to be gone.
func (s *serverProc) kill() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	<-s.exited
}

// stop sends SIGTERM and expects a clean exit within 30s.
func (s *serverProc) stop() {
	s.t.Helper()
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.kill()
		s.t.Fatalf("imago serve did not stop within 30s of SIGTERM")
	}
	if s.waitErr != nil {
		s.t.Fatalf("imago serve exited with %v after SIGTERM; log:\n%s", s.waitErr, tail(s.logPath, 40))
	}
	if _, err := os.Stat(s.readyFile); !errors.Is(err, os.ErrNotExist) {
		s.t.Errorf("ready file %s still exists after a clean stop", s.readyFile)
	}
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
