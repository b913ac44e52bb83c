package main

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/cluster"
	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/replica"
	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/raft/v3/raftpb"
)

// TestServeTLSRenewal: serve picks up renewed certificate and key files without a restart, in
// every place it uses one: the HTTP door, the text protocol door, the raft listener, and as a
// client certificate the forward to the leader and the raft dialler. A replacement whose key
// does not match its certificate is refused with one ERROR naming the files, and the last good
// certificate is served on.
func TestServeTLSRenewal(t *testing.T) {
	ca := testenv.NewCA(t, "imago CA")
	dir := t.TempDir()
	pair := func(name string) (string, string) {
		c, k, _ := ca.WriteFiles(t, dir, name, "127.0.0.1")
		return c, k
	}
	httpCert, httpKey := pair("http-a")
	protoCert, protoKey := pair("protocol-a")
	raftCert, raftKey := pair("raft-a")
	caFile := filepath.Join(dir, "ca.crt")

	cfg := config.Default()
	cfg.HTTP.TLS = config.TLS{CertFile: httpCert, KeyFile: httpKey, ClientCAFile: caFile, CAFile: caFile}
	cfg.Protocol.TLS = config.TLS{CertFile: protoCert, KeyFile: protoKey}
	cfg.Cluster.NodeID = 1
	cfg.Cluster.Peers = []config.ClusterPeer{{ID: 1, RaftAddr: "127.0.0.1:7081", HTTPAddr: "127.0.0.1:8081"}}
	cfg.Cluster.TLS = config.ClusterTLS{CertFile: raftCert, KeyFile: raftKey, CAFile: caFile}
	logs := &testenv.SyncBuffer{}
	s := &server{cfg: cfg, logger: slog.New(slog.NewTextHandler(logs, nil)), tlsCheckInterval: time.Millisecond}
	if err := s.loadTLS(context.Background()); err != nil {
		t.Fatal(err)
	}
	raftTLS := startedMemberTLS(t, s)
	reg := prometheus.NewRegistry()
	s.registerTLSMetrics(reg)
	firstExpiry := expiryGauge(t, reg)
	for _, use := range []string{"http", "protocol", "raft"} {
		if v := firstExpiry[use]; v < float64(time.Now().Unix()) || v > float64(time.Now().Add(time.Hour).Unix()) {
			t.Fatalf("expiry gauge at start: %v, want http, protocol and raft within the hour", firstExpiry)
		}
	}

	client := ca.ClientConfig(ca.Issue(t, "a client", "127.0.0.1"))
	httpDoor := tlsServerName(t, s.tls.http, client)
	protoDoor := tlsServerName(t, s.tls.protocol, client)
	raftListener := raftServerName(t, raftTLS, client)
	leader := clientCertName(t, ca)
	forward := func() string { return leader(func(addr string) { dialDiscard(t, addr, s.tls.forward) }) }
	raftDialler := func() string {
		return leader(func(addr string) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, _ = cluster.AskJoin(ctx, raftTLS, 1, 2, addr) // the listener closes: no answer
		})
	}
	uses := []struct {
		name        string
		cert, key   string
		certificate func() string
	}{
		{"http door", httpCert, httpKey, httpDoor},
		{"protocol door", protoCert, protoKey, protoDoor},
		{"raft listener", raftCert, raftKey, raftListener},
		{"forward client", httpCert, httpKey, forward},
		{"raft dialler", raftCert, raftKey, raftDialler},
	}
	for _, u := range uses {
		if got := u.certificate(); !strings.HasSuffix(got, "-a") {
			t.Fatalf("%s presents %q at start, want the first certificate", u.name, got)
		}
	}

	renewed := map[string]string{httpCert: "http-b", protoCert: "protocol-b", raftCert: "raft-b"}
	renewedUntil := time.Now().Add(2 * time.Hour).Truncate(time.Second)
	for cert, name := range renewed {
		c, k := ca.IssuePEMUntil(t, name, renewedUntil, "127.0.0.1")
		replaceFiles(t, map[string][]byte{cert: c, strings.TrimSuffix(cert, ".crt") + ".key": k})
	}
	for _, u := range uses {
		waitPresents(t, u.name, u.certificate, renewed[u.cert])
	}
	for use, v := range expiryGauge(t, reg) {
		if v != float64(renewedUntil.Unix()) || v == firstExpiry[use] {
			t.Errorf("expiry gauge of %s after the renewal: %v, want %v (it was %v)", use, v, renewedUntil.Unix(), firstExpiry[use])
		}
	}

	// A replacement whose key is another certificate's: refused, logged once, B served on.
	for cert := range renewed {
		c, _ := ca.IssuePEM(t, "mismatched", "127.0.0.1")
		_, k := ca.IssuePEM(t, "other", "127.0.0.1")
		replaceFiles(t, map[string][]byte{cert: c, strings.TrimSuffix(cert, ".crt") + ".key": k})
	}
	for _, u := range uses {
		waitFor(t, 5*time.Second, "an ERROR naming "+u.cert, func() bool {
			u.certificate()
			return errorLines(logs.String(), u.cert) > 0
		})
	}
	for range 3 {
		for _, u := range uses {
			if got := u.certificate(); got != renewed[u.cert] {
				t.Fatalf("%s presents %q after a bad replacement, want %q, the last good one", u.name, got, renewed[u.cert])
			}
		}
	}
	for use, v := range expiryGauge(t, reg) {
		if v != float64(renewedUntil.Unix()) {
			t.Errorf("expiry gauge of %s after a bad replacement: %v, want %v, the certificate still served", use, v, renewedUntil.Unix())
		}
	}
	out := logs.String()
	for cert := range renewed {
		if errs := errorLines(out, cert); errs != 1 {
			t.Errorf("%d ERROR lines name %s, want one per change; log:\n%s", errs, cert, out)
		}
	}
	if strings.Contains(out, "PRIVATE KEY") {
		t.Fatalf("the log shows a key:\n%s", out)
	}
}

// expiryGauge reads imago_tls_certificate_expiry_timestamp_seconds by use.
func expiryGauge(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "imago_tls_certificate_expiry_timestamp_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	return out
}

// startedMemberTLS runs serve's cluster stage up to the member's start and returns the raft
// transport TLS serve handed the member.
func startedMemberTLS(t *testing.T, s *server) *cluster.PeerTLS {
	t.Helper()
	orig := replicaStart
	t.Cleanup(func() { replicaStart = orig })
	var got *cluster.PeerTLS
	replicaStart = func(_ context.Context, rc replica.Config, _ *broker.Broker, _ *slog.Logger) (*replica.Member, error) {
		got = rc.TLS
		return nil, errors.New("not starting in this test")
	}
	if err := s.openCluster(context.Background()); err == nil || !strings.Contains(err.Error(), "not starting in this test") {
		t.Fatalf("openCluster: %v", err)
	}
	if got == nil {
		t.Fatal("serve handed the member no raft TLS")
	}
	return got
}

// tlsServerName listens with srv and returns a function that dials it with client and says
// whose certificate the listener presented.
func tlsServerName(t *testing.T, srv, client *tls.Config) func() string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testenv.ServeHandshakes(t, listenTLS(ln, srv))
	return func() string { return serverName(t, ln.Addr().String(), client) }
}

// raftServerName starts a raft transport with p and returns a function that says whose
// certificate its listener presents to a member dialling it.
func raftServerName(t *testing.T, p *cluster.PeerTLS, client *tls.Config) func() string {
	t.Helper()
	tr, err := cluster.NewTransport(cluster.TransportConfig{ID: 1, Listen: "127.0.0.1:0", TLS: p,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	tr.Start(context.Background(), nopHandler{})
	t.Cleanup(tr.Stop)
	return func() string { return serverName(t, tr.Addr(), client) }
}

// serverName dials addr over TLS and returns the common name of the certificate presented.
func serverName(t *testing.T, addr string, client *tls.Config) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, client)
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// clientCertName starts a listener that requires a client certificate of ca and returns a
// function that runs dial against it and says whose certificate the dialler presented.
func clientCertName(t *testing.T, ca *testenv.CA) func(dial func(addr string)) string {
	t.Helper()
	srv := &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, "leader", "127.0.0.1")},
		ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	names := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				names <- "handshake failed: " + err.Error()
			} else {
				names <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			}
			tc.Close()
		}
	}()
	return func(dial func(addr string)) string {
		dial(ln.Addr().String())
		select {
		case n := <-names:
			return n
		case <-time.After(5 * time.Second):
			t.Fatal("no connection reached the leader")
			return ""
		}
	}
}

// dialDiscard makes a TLS connection to addr with cfg and waits until the listener closes it.
func dialDiscard(t *testing.T, addr string, cfg *tls.Config) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return // the listener's side says why
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Read(make([]byte, 1))
}

// replaceFiles puts each file's new content in place by rename, as cert-manager and most
// renewal tools do.
func replaceFiles(t *testing.T, files map[string][]byte) {
	t.Helper()
	for path, data := range files {
		tmp := path + ".new"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
}

// waitPresents waits until certificate says want.
func waitPresents(t *testing.T, what string, certificate func() string, want string) {
	t.Helper()
	var got string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if got = certificate(); got == want {
			return
		}
	}
	t.Fatalf("%s still presents %q after its files were replaced, want %q", what, got, want)
}

type nopHandler struct{}

func (nopHandler) Step(*pb.Message)         {}
func (nopHandler) ReportUnreachable(uint64) {}

// errorLines counts the ERROR lines of log that name file.
func errorLines(log, file string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "level=ERROR") && strings.Contains(line, file) {
			n++
		}
	}
	return n
}
