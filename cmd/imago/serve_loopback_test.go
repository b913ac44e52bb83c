package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeRefusesLocalhostThatIsNotLoopback: without auth.tokens, "localhost" is accepted as
// a listen host only when it resolves to loopback. Here a private /etc/hosts (a mount
// namespace of the child alone) maps localhost to this machine's network address: every
// door given as localhost:port, from a flag, the environment or the file, must be refused
// with exit 2 before anything listens, or it would be open to the network without tokens.
func TestServeRefusesLocalhostThatIsNotLoopback(t *testing.T) {
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare(1) to give the child a private /etc/hosts")
	}
	if err := exec.Command(unshare, "-m", "true").Run(); err != nil {
		t.Skipf("cannot make a mount namespace here (%v): needs root", err)
	}
	public := networkAddr(t)
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte(public+" localhost\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(dir, "imago.yaml")
	if err := os.WriteFile(cfgFile, []byte("protocol: {addr: \"localhost:0\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		args []string
		env  []string
		key  string
	}{
		{name: "http flag", args: []string{"--http-addr", "localhost:0", "--protocol-addr", "127.0.0.1:0"}, key: "http.addr"},
		{name: "protocol from the file", args: []string{"--config", cfgFile, "--http-addr", "127.0.0.1:0"}, key: "protocol.addr"},
		{name: "http from the environment", args: []string{"--protocol-addr", "127.0.0.1:0"}, env: []string{"IMAGO_HTTP_ADDR=localhost:0"}, key: "http.addr"},
		{name: "pprof", args: []string{"--http-addr", "127.0.0.1:0", "--protocol-addr", "127.0.0.1:0", "--pprof-addr", "localhost:0"}, key: "--pprof-addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sub := t.TempDir()
			dataDir, ready := filepath.Join(sub, "data"), filepath.Join(sub, "ready")
			args := append([]string{"-m", "sh", "-c", `mount --bind "$0" /etc/hosts && exec "$@"`, hosts, os.Args[0],
				"serve", "--data-dir", dataDir, "--ready-file", ready}, tt.args...)
			cmd := exec.Command(unshare, args...)
			cmd.Env = append(childEnv(), tt.env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			deadline := time.After(30 * time.Second)
		wait:
			for {
				select {
				case err = <-done:
					break wait
				case <-deadline:
				case <-time.After(10 * time.Millisecond):
					if _, statErr := os.Stat(ready); statErr != nil {
						continue
					}
				}
				cmd.Process.Kill()
				<-done
				b, _ := os.ReadFile(ready)
				t.Fatalf("serve started with %s on localhost mapped to %s (ready: %q); stderr:\n%s", tt.key, public, b, stderr.String())
			}
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != exitUsage {
				t.Fatalf("want exit code %d, got %v; stderr:\n%s", exitUsage, err, stderr.String())
			}
			for _, want := range []string{tt.key, "loopback"} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
				}
			}
			if strings.Contains(stderr.String(), "listening") {
				t.Errorf("a door listened before the refusal:\n%s", stderr.String())
			}
		})
	}
}

// networkAddr returns an IPv4 address of this machine that is not loopback (serve must be
// able to bind it, so that a missing refusal shows as a door open to the network).
func networkAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("no network address besides loopback on this machine")
	return ""
}
