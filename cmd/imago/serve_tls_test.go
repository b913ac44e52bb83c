package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/client"
	"github.com/imagomq/imago/internal/testenv"
)

// Both doors behind TLS (http.tls with a client CA: mutual TLS; protocol.tls): a client that
// trusts the CA and presents a certificate is served over HTTPS, by the Go client and by the
// command line (--ca-file, --cert-file, --key-file); one without a certificate, or speaking
// plain HTTP, is not; the text protocol door answers over TLS only.
func TestServeTLS(t *testing.T) {
	ca := testenv.NewCA(t, "imago")
	dir := t.TempDir()
	srvCert, srvKey, caFile := ca.WriteFiles(t, dir, "server", "127.0.0.1")
	cliCert, cliKey, _ := ca.WriteFiles(t, dir, "client", "127.0.0.1")
	cfg := filepath.Join(dir, "imago.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`http:
  tls: {cert_file: %q, key_file: %q, client_ca_file: %q}
protocol:
  tls: {cert_file: %q, key_file: %q}
`, srvCert, srvKey, caFile, srvCert, srvKey)), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, filepath.Join(dir, "data"), "--config", cfg)
	if !strings.HasPrefix(srv.URL, "https://") {
		t.Fatalf("ready file says %q, want an https:// URL", srv.URL)
	}
	ctx := context.Background()

	cl := client.New(srv.URL, client.WithTLSConfig(ca.ClientConfig(ca.Issue(t, "client", "127.0.0.1"))))
	if _, err := cl.CreateTopic(ctx, "tls.t", client.TopicConfig{Partitions: 1}); err != nil {
		t.Fatalf("create a topic over mutual TLS: %v", err)
	}
	if _, err := cl.Produce(ctx, "tls.t", []client.Message{{Value: []byte(`"paid"`)}}, client.ProduceOptions{}); err != nil {
		t.Fatalf("produce over mutual TLS: %v", err)
	}

	// The expiry of the certificates in use, per door.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ca.ClientConfig(ca.Issue(t, "client", "127.0.0.1"))}}
	resp, err := hc.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, use := range []string{"http", "protocol"} {
		if !strings.Contains(string(metrics), `imago_tls_certificate_expiry_timestamp_seconds{use="`+use+`"}`) {
			t.Fatalf("/metrics has no certificate expiry for %s:\n%s", use, metrics)
		}
	}

	// No client certificate: the handshake refuses it, nothing is served. (With TLS 1.3 the
	// refusal reaches the client after its request, as an alert or as the connection's end.)
	noCert := client.New(srv.URL, client.WithTLSConfig(ca.ClientConfig()), client.WithRetries(1))
	if topics, err := noCert.ListTopics(ctx); err == nil {
		t.Fatalf("a client without a certificate was served: %v", topics)
	}
	// Plain HTTP to the HTTPS door is no request.
	if resp, err := http.Get("http://" + strings.TrimPrefix(srv.URL, "https://") + "/v1/topics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP to the TLS door answered %d", resp.StatusCode)
		}
	}
	// Both failed handshakes are counted, and neither is a WARN line in the server's log (a load
	// balancer's TCP health check fails one every few seconds).
	var failures float64
	for deadline := time.Now().Add(10 * time.Second); failures < 2 && time.Now().Before(deadline); {
		resp, err := hc.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, `imago_tls_handshake_failures_total{door="http"} `) {
				failures, _ = strconv.ParseFloat(strings.Fields(l)[1], 64)
			}
		}
	}
	if failures < 2 {
		t.Fatalf("imago_tls_handshake_failures_total is %v after two failed handshakes", failures)
	}
	if logged, _ := os.ReadFile(srv.logPath); strings.Contains(string(logged), "TLS handshake error") {
		t.Fatalf("a failed handshake was logged above DEBUG:\n%s", logged)
	}

	// The command line.
	code, out, stderr := imago(t, srv, "", "--ca-file", caFile, "--cert-file", cliCert, "--key-file", cliKey, "topics", "list")
	if code != 0 || !strings.Contains(out, "tls.t") {
		t.Fatalf("topics list over TLS: exit %d, %q, %q", code, out, stderr)
	}
	if code, _, stderr = imago(t, srv, "", "--ca-file", caFile, "topics", "list"); code == 0 {
		t.Fatalf("topics list without a client certificate succeeded")
	}
	if code, _, stderr = imago(t, srv, "", "--ca-file", filepath.Join(dir, "missing.pem"), "topics", "list"); code != exitUsage || !strings.Contains(stderr, "missing.pem") {
		t.Fatalf("a missing --ca-file: exit %d, %q", code, stderr)
	}
	// A command that never calls a server does not read them: a stale IMAGO_CA_FILE must not
	// stop `imago version` (or serve).
	t.Setenv("IMAGO_CA_FILE", filepath.Join(dir, "missing.pem"))
	if code, out, stderr = imago(t, srv, "", "version"); code != 0 {
		t.Fatalf("version with a missing IMAGO_CA_FILE: exit %d, %q, %q", code, out, stderr)
	}
	if code, _, stderr = imago(t, srv, "", "topics", "list"); code != exitUsage || !strings.Contains(stderr, "missing.pem") {
		t.Fatalf("topics list with a missing IMAGO_CA_FILE: exit %d, %q", code, stderr)
	}
	os.Unsetenv("IMAGO_CA_FILE")
	code, out, stderr = imago(t, srv, "", "--ca-file", caFile, "stats", "--protocol", "--protocol-tls", "--protocol-addr", srv.Protocol, "topics")
	if code != 0 || !strings.Contains(out, "tls.t") {
		t.Fatalf("stats --protocol over TLS: exit %d, %q, %q", code, out, stderr)
	}

	// The text protocol door over TLS, and refusing plain text.
	tc, err := tls.Dial("tcp", srv.Protocol, ca.ClientConfig())
	if err != nil {
		t.Fatalf("TLS to the protocol door: %v", err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(tc, "version 1\r\n")
	if line, err := bufio.NewReader(tc).ReadString('\n'); err != nil || !strings.HasPrefix(line, "result 200") {
		t.Fatalf("version over TLS: %q, %v", line, err)
	}
	pc, err := net.DialTimeout("tcp", srv.Protocol, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(pc, "version 1\r\n")
	if line, err := bufio.NewReader(pc).ReadString('\n'); err == nil || strings.Contains(line, "result") {
		t.Fatalf("the TLS protocol door answered plain text: %q, %v", line, err)
	}
}

// A certificate file that cannot be read stops serve before it opens anything, naming the key
// and the file.
func TestServeTLSMissingFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "imago.yaml")
	missing := filepath.Join(dir, "nope.pem")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("http:\n  tls: {cert_file: %q, key_file: %q}\n", missing, missing)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := imagoCmd("serve", "--config", cfg, "--data-dir", filepath.Join(dir, "data"), "--http-addr", "127.0.0.1:0", "--protocol-addr", "127.0.0.1:0")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "http.tls") || !strings.Contains(string(out), missing) {
		t.Fatalf("serve with a missing certificate: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Fatalf("serve created its data directory before it read its certificate: %v", err)
	}
}
