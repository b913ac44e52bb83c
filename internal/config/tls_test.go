package config

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagomq/imago/internal/certreload"
	"github.com/imagomq/imago/internal/testenv"
)

// The tls blocks of the doors: what Validate refuses without reading files, and what reading
// them reports, each naming the key and the file.
func TestTLSBlocks(t *testing.T) {
	ca := testenv.NewCA(t, "doors")
	cert, key, caFile := ca.WriteFiles(t, t.TempDir(), "node", "127.0.0.1")
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")

	for _, tc := range []struct {
		name    string
		mutate  func(c *Config)
		wantErr []string
	}{
		{"http and protocol tls", func(c *Config) {
			c.HTTP.TLS = TLS{CertFile: cert, KeyFile: key, ClientCAFile: caFile, CAFile: caFile}
			c.Protocol.TLS = TLS{CertFile: cert, KeyFile: key, ClientCAFile: caFile}
		}, nil},
		{"cert without key", func(c *Config) { c.HTTP.TLS = TLS{CertFile: cert} }, []string{"http.tls", "both cert_file and key_file"}},
		{"key without cert", func(c *Config) { c.Protocol.TLS = TLS{KeyFile: key} }, []string{"protocol.tls", "both cert_file and key_file"}},
		{"client ca without a certificate", func(c *Config) { c.HTTP.TLS = TLS{ClientCAFile: caFile} }, []string{"http.tls", "need cert_file and key_file"}},
		{"protocol has no ca_file", func(c *Config) { c.Protocol.TLS = TLS{CertFile: cert, KeyFile: key, CAFile: caFile} }, []string{"protocol.tls.ca_file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.mutate(&c)
			checkErrs(t, c.Validate(), tc.wantErr)
		})
	}

	for _, tc := range []struct {
		name    string
		tls     TLS
		wantErr []string
	}{
		{"off", TLS{}, nil},
		{"server", TLS{CertFile: cert, KeyFile: key}, nil},
		{"mutual", TLS{CertFile: cert, KeyFile: key, ClientCAFile: caFile}, nil},
		{"missing certificate", TLS{CertFile: missing, KeyFile: key}, []string{"http.tls", missing}},
		{"key is not PEM", TLS{CertFile: cert, KeyFile: bad}, []string{"http.tls", bad}},
		{"client ca missing", TLS{CertFile: cert, KeyFile: key, ClientCAFile: missing}, []string{"http.tls.client_ca_file", missing}},
		{"client ca is not PEM", TLS{CertFile: cert, KeyFile: key, ClientCAFile: bad}, []string{"http.tls.client_ca_file", bad, "no PEM certificate"}},
	} {
		t.Run("read "+tc.name, func(t *testing.T) {
			cfg, err := serverConfig(tc.tls)
			checkErrs(t, err, tc.wantErr)
			if err == nil && (cfg == nil) == tc.tls.Enabled() {
				t.Fatalf("config %v for %+v", cfg, tc.tls)
			}
			if tc.tls.ClientCAFile != "" && err == nil && cfg.ClientCAs == nil {
				t.Fatal("client_ca_file set, but client certificates are not required")
			}
		})
	}

	// The command line's files.
	if cfg, err := ClientTLS("", "", ""); cfg != nil || err != nil {
		t.Fatalf("no files: %v, %v", cfg, err)
	}
	if _, err := ClientTLS(caFile, cert, ""); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("certificate without key: %v", err)
	}
	if _, err := ClientTLS(bad, "", ""); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("bad CA file: %v", err)
	}
	if cfg, err := ClientTLS(caFile, cert, key); err != nil || cfg.RootCAs == nil || len(cfg.Certificates) != 1 {
		t.Fatalf("CA and client certificate: %v, %v", cfg, err)
	}
}

// serverConfig reads the door's files as serve does: the certificate and key (the reloader),
// then the server configuration around them.
func serverConfig(t TLS) (*tls.Config, error) {
	r, err := t.Reloader("http.tls", certreload.Options{Use: "http"})
	if err != nil {
		return nil, err
	}
	return t.ServerConfig("http.tls", r)
}

func checkErrs(t *testing.T, err error, want []string) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error, want one naming %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %q", err, w)
		}
	}
}
