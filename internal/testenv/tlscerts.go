package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority made for one test: it signs member certificates for the raft
// transport's mutual TLS, as an operator's cluster CA does (docs/cluster.md). Keys are ECDSA
// P-256, quick to make; certificates are valid from an hour ago to an hour from now.
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// PEM is the CA certificate, as ca_file holds it.
	PEM []byte
	// parent is the CA that signed this one (Intermediate); nil for a root.
	parent *CA
}

// NewCA makes a CA named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	return newCA(t, name, nil)
}

// Intermediate makes a CA named name that ca signs. Certificates it issues carry it after
// themselves (the chain a PKI hands out), and WriteFiles writes the root as ca.crt.
func (ca *CA) Intermediate(t testing.TB, name string) *CA {
	t.Helper()
	return newCA(t, name, ca)
}

func newCA(t testing.TB, name string, parent *CA) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := template(t, name)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.Cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatalf("testenv: make CA %s: %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), parent: parent}
}

// root is the CA at the top of ca's chain.
func (ca *CA) root() *CA {
	for ca.parent != nil {
		ca = ca.parent
	}
	return ca
}

// Pool is a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// IssuePEM signs a member certificate named name whose SANs are hosts (IP addresses become IP
// SANs, anything else DNS SANs), usable as server and client, and returns it and its key in
// PEM.
func (ca *CA) IssuePEM(t testing.TB, name string, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	return ca.IssuePEMUntil(t, name, time.Now().Add(time.Hour), hosts...)
}

// IssuePEMUntil is IssuePEM with a certificate valid until notAfter (a renewal, or one that
// has expired already).
func (ca *CA) IssuePEMUntil(t testing.TB, name string, notAfter time.Time, hosts ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key := newKey(t)
	tmpl := template(t, name)
	tmpl.NotAfter = notAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("testenv: issue %s: %v", name, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for c := ca; c.parent != nil; c = c.parent {
		chain = append(chain, c.PEM...)
	}
	return chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// Issue is IssuePEM as a tls.Certificate.
func (ca *CA) Issue(t testing.TB, name string, hosts ...string) tls.Certificate {
	t.Helper()
	c, k := ca.IssuePEM(t, name, hosts...)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// WriteFiles issues a member certificate as IssuePEM does and writes it, its key and the root
// CA's certificate into dir as name.crt, name.key and ca.crt, returning the three paths.
func (ca *CA) WriteFiles(t testing.TB, dir, name string, hosts ...string) (certFile, keyFile, caFile string) {
	t.Helper()
	c, k := ca.IssuePEM(t, name, hosts...)
	certFile, keyFile, caFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), filepath.Join(dir, "ca.crt")
	for path, data := range map[string][]byte{certFile: c, keyFile: k, caFile: ca.root().PEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile, caFile
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// template is a certificate named name with a random serial, valid from an hour ago to an hour
// from now.
func template(t testing.TB, name string) *x509.Certificate {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return &x509.Certificate{SerialNumber: n, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
}

// ClientConfig is a TLS client configuration that trusts this CA alone and presents certs
// (none: a client without a certificate).
func (ca *CA) ClientConfig(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{RootCAs: ca.Pool(), Certificates: certs, MinVersion: tls.VersionTLS12}
}

// ServeHandshakes accepts connections of the TLS listener ln until it is closed (closed with the
// test), completes each one's handshake and holds it until the client closes it or 5 s pass:
// a server for tests that only look at the certificates a handshake shows.
func ServeHandshakes(t testing.TB, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if tc, ok := c.(*tls.Conn); ok {
					_ = tc.Handshake()
				}
				_, _ = c.Read(make([]byte, 1)) // until the client closes
			}()
		}
	}()
}
