package certreload

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
)

// pairFiles writes a certificate named name, valid until notAfter, and its key into
// dir/node.crt and dir/node.key (by rename, as renewal tools do) and returns the two paths.
func pairFiles(t *testing.T, ca *testenv.CA, dir, name string, notAfter time.Time) (string, string) {
	t.Helper()
	c, k := ca.IssuePEMUntil(t, name, notAfter, "127.0.0.1")
	certFile, keyFile := filepath.Join(dir, "node.crt"), filepath.Join(dir, "node.key")
	writeFile(t, certFile, c)
	writeFile(t, keyFile, k)
	return certFile, keyFile
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// loadPair reads the pair as a door does.
func loadPair(certFile, keyFile string) func() (tls.Certificate, error) {
	return func() (tls.Certificate, error) { return tls.LoadX509KeyPair(certFile, keyFile) }
}

// serve listens with a TLS configuration whose certificate r gives and returns a function
// that dials it and says whose certificate it presented.
func serve(t *testing.T, r *Reloader, ca *testenv.CA) func() string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: r.GetCertificate, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	testenv.ServeHandshakes(t, ln)
	return func() string {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), ca.ClientConfig())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
}

// until dials until the listener presents want.
func until(t *testing.T, presented func() string, want string) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if got = presented(); got == want {
			return
		}
	}
	t.Fatalf("the listener presents %q, want %q", got, want)
}

// logged dials until log holds n ERROR lines.
func logged(t *testing.T, presented func() string, log *testenv.SyncBuffer, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		presented()
		if strings.Count(log.String(), "level=ERROR") >= n {
			return
		}
	}
	t.Fatalf("want %d ERROR lines; log:\n%s", n, log.String())
}

// TestReloaderServesRenewedCertificate: a listener behind a Reloader presents a renewed
// certificate from the next handshake on; a replacement it cannot use (a key of another
// certificate, a file gone, a certificate written before its key) leaves the last good one
// in use with one ERROR per change naming the files and never the key; the expiry gauge
// follows the certificate in use.
func TestReloaderServesRenewedCertificate(t *testing.T) {
	ca := testenv.NewCA(t, "test CA")
	dir := t.TempDir()
	hourA := time.Now().Add(time.Hour).Truncate(time.Second)
	certFile, keyFile := pairFiles(t, ca, dir, "A", hourA)
	log := &testenv.SyncBuffer{}
	r, err := New(Options{Use: "http", CertFile: certFile, KeyFile: keyFile, Load: loadPair(certFile, keyFile),
		Interval: time.Millisecond, Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	presented := serve(t, r, ca)
	gauge := func() float64 {
		t.Helper()
		reg := prometheus.NewRegistry()
		reg.MustRegister(ExpiryCollector(r))
		mfs, err := reg.Gather()
		if err != nil || len(mfs) != 1 || len(mfs[0].GetMetric()) != 1 {
			t.Fatalf("gather: %v, %v", mfs, err)
		}
		m := mfs[0].GetMetric()[0]
		if mfs[0].GetName() != "imago_tls_certificate_expiry_timestamp_seconds" || m.GetLabel()[0].GetValue() != "http" {
			t.Fatalf("gathered %v", mfs[0])
		}
		return m.GetGauge().GetValue()
	}
	if got := presented(); got != "A" {
		t.Fatalf("presents %q at start, want A", got)
	}
	if g := gauge(); g != float64(hourA.Unix()) {
		t.Fatalf("expiry gauge %v, want %d", g, hourA.Unix())
	}

	// Renewed: B, valid an hour longer.
	hourB := hourA.Add(time.Hour)
	pairFiles(t, ca, dir, "B", hourB)
	until(t, presented, "B")
	if g := gauge(); g != float64(hourB.Unix()) {
		t.Fatalf("expiry gauge after the renewal %v, want %d", g, hourB.Unix())
	}
	if !strings.Contains(log.String(), "TLS certificate reloaded") || strings.Contains(log.String(), "level=ERROR") {
		t.Fatalf("log after the renewal:\n%s", log.String())
	}

	// A key that is not the certificate's: B is served on, one ERROR names the files.
	c, _ := ca.IssuePEM(t, "mismatched", "127.0.0.1")
	_, k := ca.IssuePEM(t, "other", "127.0.0.1")
	writeFile(t, certFile, c)
	writeFile(t, keyFile, k)
	logged(t, presented, log, 1)
	for range 5 {
		if got := presented(); got != "B" {
			t.Fatalf("presents %q after a mismatched replacement, want B", got)
		}
	}
	if n := strings.Count(log.String(), "level=ERROR"); n != 1 {
		t.Fatalf("%d ERROR lines for one bad change, want 1; log:\n%s", n, log.String())
	}
	line := log.String()[strings.Index(log.String(), "level=ERROR"):]
	if !strings.Contains(line, certFile) || !strings.Contains(line, keyFile) || !strings.Contains(line, "use=http") {
		t.Fatalf("the ERROR does not name the use and the files: %s", line)
	}
	if g := gauge(); g != float64(hourB.Unix()) {
		t.Fatalf("expiry gauge after a bad replacement %v, want B's %d", g, hourB.Unix())
	}

	// The key file gone: another change, another ERROR, B still.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	logged(t, presented, log, 2)
	if got := presented(); got != "B" {
		t.Fatalf("presents %q with the key file gone, want B", got)
	}

	// A renewal that writes the certificate first and the key after: C once both are there.
	c, k = ca.IssuePEM(t, "C", "127.0.0.1")
	writeFile(t, certFile, c)
	logged(t, presented, log, 3)
	writeFile(t, keyFile, k)
	until(t, presented, "C")
	if strings.Contains(log.String(), "PRIVATE KEY") {
		t.Fatalf("the log shows a key:\n%s", log.String())
	}
}

// TestReloaderLooksAtMostEveryInterval: within Interval the files are not looked at, so a
// handshake costs no file system call; the start's read error is New's, unchanged.
func TestReloaderLooksAtMostEveryInterval(t *testing.T) {
	ca := testenv.NewCA(t, "test CA")
	dir := t.TempDir()
	certFile, keyFile := pairFiles(t, ca, dir, "A", time.Now().Add(time.Hour))
	r, err := New(Options{Use: "raft", CertFile: certFile, KeyFile: keyFile, Load: loadPair(certFile, keyFile), Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	pairFiles(t, ca, dir, "B", time.Now().Add(time.Hour))
	if got := r.Certificate().Leaf.Subject.CommonName; got != "A" {
		t.Fatalf("within the interval the certificate changed to %q", got)
	}

	bad := errors.New("http.tls: load cert_file x and key_file y: broken")
	if _, err := New(Options{Use: "http", CertFile: certFile, KeyFile: keyFile, Load: func() (tls.Certificate, error) { return tls.Certificate{}, bad }}); err != bad {
		t.Fatalf("New with a bad pair: %v, want the load's own error", err)
	}
}

// TestReloaderRetriesRefusedPair: a refused pair is read again at every look, with no change
// of the files, so one refused for a reason that passes with time (a raft certificate whose
// NotBefore is a little ahead of this clock) is taken once it passes; it is logged once.
func TestReloaderRetriesRefusedPair(t *testing.T) {
	ca := testenv.NewCA(t, "test CA")
	dir := t.TempDir()
	certFile, keyFile := pairFiles(t, ca, dir, "A", time.Now().Add(time.Hour))
	var notYet atomic.Bool
	load := func() (tls.Certificate, error) {
		if notYet.Load() {
			return tls.Certificate{}, errors.New("x509: certificate has expired or is not yet valid")
		}
		return tls.LoadX509KeyPair(certFile, keyFile)
	}
	log := &testenv.SyncBuffer{}
	r, err := New(Options{Use: "raft", CertFile: certFile, KeyFile: keyFile, Load: load,
		Interval: time.Millisecond, Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	presented := serve(t, r, ca)
	notYet.Store(true)
	pairFiles(t, ca, dir, "B", time.Now().Add(time.Hour))
	logged(t, presented, log, 1)
	if got := presented(); got != "A" {
		t.Fatalf("presents %q while B is refused, want A", got)
	}
	notYet.Store(false)
	until(t, presented, "B")
	if n := strings.Count(log.String(), "level=ERROR"); n != 1 {
		t.Fatalf("%d ERROR lines for one refused change, want 1; log:\n%s", n, log.String())
	}
}
