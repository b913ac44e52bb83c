package main

import (
	"context"
	"crypto/tls"
	"net"

	"github.com/imagomq/imago/internal/config"
)

// TLS of the doors (http.tls, protocol.tls; config/tls.go says what each key decides).

// serveTLS holds the doors' TLS configurations, read once at start; nil: plain TCP.
type serveTLS struct {
	http, protocol *tls.Config
	// forward is what this member dials the leader's HTTP door with (cluster mode, http.tls).
	forward *tls.Config
}

// loadTLS reads the certificates and keys before anything opens, so a missing or bad file
// stops serve at once with the key and the file named, and warns when a door that takes
// tokens from the network has no TLS.
func (s *server) loadTLS(context.Context) error {
	var err error
	cfg := s.cfg
	if s.tls.http, err = cfg.HTTP.TLS.ServerConfig("http.tls"); err != nil {
		return err
	}
	if s.tls.forward, err = cfg.HTTP.TLS.ClientConfig("http.tls"); err != nil {
		return err
	}
	if cfg.Protocol.Enabled {
		if s.tls.protocol, err = cfg.Protocol.TLS.ServerConfig("protocol.tls"); err != nil {
			return err
		}
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
