package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/imagomq/imago/internal/certreload"
)

// TLS puts a door (http.tls, protocol.tls) behind TLS. Without cert_file and key_file the door
// speaks plain TCP, as before; the loopback rule (no auth.tokens: loopback only) holds either
// way, since TLS encrypts but does not say who may produce.
//
// Decisions, for a payment team's review:
//   - TLS 1.2 at least (Go's default suites). The certificate and key are read at start (a bad
//     file stops serve) and again when they change while serve runs (certreload: looked at at
//     most every 5 s, on use), so a renewed certificate needs no restart; a replacement that
//     cannot be used is logged at ERROR and the last good pair served on. The CA bundles
//     (client_ca_file, ca_file) are read at start only: a new CA takes a restart.
//   - client_ca_file set: mutual TLS. Every client must present a certificate that chains to it,
//     before any request is read; the bearer token is still checked after that.
//   - ca_file (http.tls only) is what a cluster member trusts when it forwards a request to the
//     leader's http_addr over HTTPS; empty: the system's roots. A member presents its own
//     certificate there, so members pass each other's client_ca_file when it names their CA.
//   - HTTP/1.1 only over TLS (no HTTP/2): the same connection behaviour and timeouts as plain HTTP.
type TLS struct {
	// CertFile and KeyFile are the PEM certificate (chain) and private key of this door.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, is a PEM bundle of the CAs whose client certificates are accepted;
	// a client without one is refused during the handshake.
	ClientCAFile string `yaml:"client_ca_file"`
	// CAFile (http.tls only) is a PEM bundle of the CAs that the other members' HTTP certificates
	// are checked against when this member forwards a request to the leader. Empty: system roots.
	CAFile string `yaml:"ca_file"`
}

// Enabled reports whether the door is to speak TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" || t.KeyFile != "" }

// check returns what is wrong with the block at key ("http.tls"), without reading the files.
func (t TLS) check(key string) []error {
	var errs []error
	if t.Enabled() && (t.CertFile == "" || t.KeyFile == "") {
		errs = append(errs, fmt.Errorf("%s: set both cert_file and key_file (the certificate and its private key), or neither for plain TCP", key))
	}
	if !t.Enabled() && (t.ClientCAFile != "" || t.CAFile != "") {
		errs = append(errs, fmt.Errorf("%s: client_ca_file and ca_file need cert_file and key_file: the door speaks TLS only with a certificate of its own", key))
	}
	return errs
}

// KeyPair reads the door's certificate and key. Errors name the key and the files, never the
// key material. It is the read at start and at every renewal (Reloader).
func (t TLS) KeyPair(key string) (tls.Certificate, error) {
	if errs := t.check(key); len(errs) > 0 {
		return tls.Certificate{}, errors.Join(errs...)
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: load cert_file %s and key_file %s: %w", key, t.CertFile, t.KeyFile, err)
	}
	return cert, nil
}

// Reloader reads the door's certificate and key (KeyPair: a missing or bad file is an error
// naming the key and the file, which stops serve) and returns what keeps them current while
// serve runs: renewed files are read again without a restart (certreload says when). o gives
// the use, the check interval and the logger. nil, nil when TLS is off.
func (t TLS) Reloader(key string, o certreload.Options) (*certreload.Reloader, error) {
	if !t.Enabled() {
		return nil, nil
	}
	o.CertFile, o.KeyFile = t.CertFile, t.KeyFile
	o.Load = func() (tls.Certificate, error) { return t.KeyPair(key) }
	return certreload.New(o)
}

// ServerConfig returns the door's server-side TLS configuration, presenting the certificate
// cert holds at each handshake (cert is the door's Reloader); nil, nil when TLS is off
// (cert nil). It reads client_ca_file; errors name the key and the file.
func (t TLS) ServerConfig(key string, cert *certreload.Reloader) (*tls.Config, error) {
	if !t.Enabled() || cert == nil {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: cert.GetCertificate,
	}
	if t.ClientCAFile != "" {
		pool, err := readCAs(key+".client_ca_file", t.ClientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientConfig returns the configuration a member uses to reach the other members' doors (the
// forward to the leader): it trusts ca_file (system roots when empty) and presents the
// certificate cert holds at each handshake (this door's own, for peers that require one).
// nil, nil when TLS is off (cert nil).
func (t TLS) ClientConfig(key string, cert *certreload.Reloader) (*tls.Config, error) {
	if !t.Enabled() || cert == nil {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetClientCertificate: cert.GetClientCertificate}
	if t.CAFile != "" {
		var err error
		if cfg.RootCAs, err = readCAs(key+".ca_file", t.CAFile); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// ClientTLS builds a client's TLS configuration from a CA bundle to trust (empty: the system's
// roots) and an optional certificate and key to present (mutual TLS); nil, nil when all three
// are empty. The command line's --ca-file, --cert-file and --key-file use it.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := readCAs("ca file", caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("client certificate: give both the certificate file and its key file")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s and key %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// readCAs reads a PEM bundle of CA certificates.
func readCAs(key, path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s %s: no PEM certificate in it", key, path)
	}
	return pool, nil
}
