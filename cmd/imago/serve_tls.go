package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/imagomq/imago/cluster"
	"github.com/imagomq/imago/internal/certreload"
	"github.com/imagomq/imago/internal/config"
	"github.com/prometheus/client_golang/prometheus"
)

// TLS of the doors (http.tls, protocol.tls; config/tls.go says what each key decides) and of
// the raft port (cluster.tls; config/clustertls.go).

// serveTLS holds the TLS configurations; nil: plain TCP. Their certificates are kept current
// by certs: a renewed certificate and key are used from the next handshake on, without a
// restart (internal/certreload says when the files are looked at).
type serveTLS struct {
	http, protocol *tls.Config
	// forward is what this member dials the leader's HTTP door with (cluster mode, http.tls).
	forward *tls.Config
	// raft is the raft transport's mutual TLS (cluster.tls).
	raft *cluster.PeerTLS
	// certs keep the certificates current, one per use (http, protocol, raft); the expiry
	// metric reports them.
	certs []*certreload.Reloader
	// handshakeFailures counts failed handshakes on the HTTPS door (handshakeLog).
	handshakeFailures prometheus.Counter
}

// loadTLS reads the certificates and keys before anything opens, so a missing or bad file
// stops serve at once with the key and the file named, and warns when a door that takes
// tokens from the network has no TLS.
func (s *server) loadTLS(context.Context) error {
	var err error
	cfg := s.cfg
	httpCert, err := s.certReloader(cfg.HTTP.TLS, "http.tls", "http")
	if err != nil {
		return err
	}
	if s.tls.http, err = cfg.HTTP.TLS.ServerConfig("http.tls", httpCert); err != nil {
		return err
	}
	if s.tls.forward, err = cfg.HTTP.TLS.ClientConfig("http.tls", httpCert); err != nil {
		return err
	}
	if cfg.Protocol.Enabled {
		protoCert, err := s.certReloader(cfg.Protocol.TLS, "protocol.tls", "protocol")
		if err != nil {
			return err
		}
		if s.tls.protocol, err = cfg.Protocol.TLS.ServerConfig("protocol.tls", protoCert); err != nil {
			return err
		}
	}
	if s.tls.raft, err = s.raftTLS(cfg.Cluster); err != nil {
		return err
	}
	for _, d := range []struct {
		key, addr string
		on        bool
		tls       *tls.Config
	}{
		{"http", cfg.HTTP.Addr, true, s.tls.http},
		{"protocol", cfg.Protocol.Addr, cfg.Protocol.Enabled, s.tls.protocol},
	} {
		if d.on && d.tls == nil && !config.IsLoopback(d.addr) {
			s.logger.Warn("a door listens beyond loopback without TLS: bearer tokens and messages cross the network in clear; set "+d.key+".tls, or terminate TLS in front of it",
				"door", d.key, "addr", d.addr)
		}
	}
	return nil
}

// certReloader reads a door's certificate and key and keeps them current; nil when the door
// has no TLS.
func (s *server) certReloader(t config.TLS, key, use string) (*certreload.Reloader, error) {
	r, err := t.Reloader(key, s.certOptions(use))
	if r != nil {
		s.tls.certs = append(s.tls.certs, r)
	}
	return r, err
}

// certOptions are the reload options of one use.
func (s *server) certOptions(use string) certreload.Options {
	return certreload.Options{Use: use, Interval: s.tlsCheckInterval, Logger: s.logger}
}

// raftTLS is the raft transport's mutual TLS made from cluster.tls, or nil when none is
// configured (Validate has allowed that only on loopback or with cluster.insecure_transport).
// The member's certificate is renewed while serve runs; the CA pool is the one read now.
func (s *server) raftTLS(c config.Cluster) (*cluster.PeerTLS, error) {
	if !c.Enabled() || !c.TLS.Enabled() {
		return nil, nil
	}
	_, roots, err := c.TLS.Load()
	if err != nil {
		return nil, err
	}
	r, err := c.CertReloader(roots, s.certOptions("raft"))
	if err != nil {
		return nil, err
	}
	s.tls.certs = append(s.tls.certs, r)
	p, err := cluster.NewRenewablePeerTLS(r.Certificate, roots)
	if err != nil {
		return nil, fmt.Errorf("cluster.tls: %w", err)
	}
	return p, nil
}

// registerTLSMetrics registers the expiry gauge of the certificates in use
// (imago_tls_certificate_expiry_timestamp_seconds{use}) and, with http.tls, the count of failed
// handshakes on the HTTP door; nothing when no TLS is configured.
func (s *server) registerTLSMetrics(reg prometheus.Registerer) {
	if len(s.tls.certs) > 0 {
		reg.MustRegister(certreload.ExpiryCollector(s.tls.certs...))
	}
	if s.tls.http != nil {
		s.tls.handshakeFailures = prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "imago_tls_handshake_failures_total",
			Help:        "TLS handshakes that failed on a door: a client that does not trust this certificate or has none the door accepts, a TCP health check that connects and closes, a scanner.",
			ConstLabels: prometheus.Labels{"door": "http"},
		})
		reg.MustRegister(s.tls.handshakeFailures)
	}
}

// handshakeLog is the HTTPS door's error log: a failed TLS handshake is counted
// (imago_tls_handshake_failures_total) and logged at DEBUG, since a load balancer's TCP health
// check fails one every few seconds and one WARN line per connection would bury the log;
// everything else the HTTP server reports stays at WARN.
type handshakeLog struct {
	log      *slog.Logger
	failures prometheus.Counter
}

func (h handshakeLog) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	if strings.Contains(msg, "TLS handshake error") {
		if h.failures != nil {
			h.failures.Inc()
		}
		h.log.Debug(msg)
	} else {
		h.log.Warn(msg)
	}
	return len(p), nil
}

// listenTLS wraps ln in TLS when cfg is set.
func listenTLS(ln net.Listener, cfg *tls.Config) net.Listener {
	if cfg == nil {
		return ln
	}
	return tls.NewListener(ln, cfg)
}

// scheme is the HTTP door's URL scheme.
func (s *server) scheme() string {
	if s.tls.http != nil {
		return "https"
	}
	return "http"
}
