package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"

	"github.com/imagomq/imago/internal/certreload"
)

// ClusterTLS is cluster.tls: the PEM files of the raft transport's mutual TLS. Every member
// has a certificate and key of its own, signed by one CA that signs nothing else; ca_file is
// that CA's certificate, the same on every member. A member's certificate serves both ends of
// a connection, so it needs the serverAuth and clientAuth extended key usages (or none), and
// DNS or IP SANs that cover the host of its raft_addr as the other members dial it
// (docs/cluster.md). The files are read at start; a renewed cert_file and key_file are read
// again while serve runs (Cluster.CertReloader), a changed ca_file takes a restart.
type ClusterTLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	CAFile   string `yaml:"ca_file"`
}

// Enabled reports whether any of the three files is configured (Validate requires all three).
func (t ClusterTLS) Enabled() bool {
	return t.CertFile != "" || t.KeyFile != "" || t.CAFile != ""
}

// Load reads the three files: the member's certificate with its key, and a pool of the CA's
// certificates. It fails, naming the key and the file, when a file is missing or holds no
// usable PEM, when the key is not the certificate's, or when the CA did not sign the
// certificate for use as server and client (an expired certificate fails so too). The errors
// never quote the key.
func (t ClusterTLS) Load() (tls.Certificate, *x509.CertPool, error) {
	fail := func(format string, args ...any) (tls.Certificate, *x509.CertPool, error) {
		return tls.Certificate{}, nil, fmt.Errorf(format, args...)
	}
	if t.CertFile == "" || t.KeyFile == "" || t.CAFile == "" {
		return fail("cluster.tls: cert_file, key_file and ca_file are all required (missing: %s)", strings.Join(t.missing(), ", "))
	}
	certPEM, keyPEM, err := t.readPair()
	if err != nil {
		return fail("%w", err)
	}
	caPEM, err := readPEM("ca_file", t.CAFile, "CERTIFICATE")
	if err != nil {
		return fail("%w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fail("cluster.tls.ca_file %s: no certificate in it could be parsed", t.CAFile)
	}
	cert, err := t.memberPair(certPEM, keyPEM, roots)
	if err != nil {
		return fail("%w", err)
	}
	return cert, roots, nil
}

// LoadCert reads the member's certificate and key again (a renewal) and checks them as Load
// does, against roots: the CA pool in use, since ca_file is read at start only.
func (t ClusterTLS) LoadCert(roots *x509.CertPool) (tls.Certificate, error) {
	certPEM, keyPEM, err := t.readPair()
	if err != nil {
		return tls.Certificate{}, err
	}
	return t.memberPair(certPEM, keyPEM, roots)
}

// readPair reads cert_file and key_file, each of which must hold PEM of its kind.
func (t ClusterTLS) readPair() (certPEM, keyPEM []byte, err error) {
	if certPEM, err = readPEM("cert_file", t.CertFile, "CERTIFICATE"); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = readPEM("key_file", t.KeyFile, "PRIVATE KEY"); err != nil {
		return nil, nil, err
	}
	return certPEM, keyPEM, nil
}

// memberPair makes the member's certificate with its key and checks that roots signed it for
// a member (verifyMember).
func (t ClusterTLS) memberPair(certPEM, keyPEM []byte, roots *x509.CertPool) (tls.Certificate, error) {
	cert, err := t.pair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := t.verifyMember(cert, roots); err != nil {
		return tls.Certificate{}, err
	}
	return cert, nil
}

// pair makes the certificate with its key, its Leaf parsed.
func (t ClusterTLS) pair(certPEM, keyPEM []byte) (tls.Certificate, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("cluster.tls.cert_file %s with key_file %s: %w", t.CertFile, t.KeyFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, fmt.Errorf("cluster.tls.cert_file %s: %w", t.CertFile, err)
		}
	}
	return cert, nil
}

// verifyMember checks that roots signed cert for use as TLS server and client, valid now,
// directly or through the intermediate CAs cert_file holds after the member's certificate (as
// a TLS peer sends them, and as the handshake then verifies them).
func (t ClusterTLS) verifyMember(cert tls.Certificate, roots *x509.CertPool) error {
	inter := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return fmt.Errorf("cluster.tls.cert_file %s: an intermediate certificate after the member's: %w", t.CertFile, err)
		}
		inter.AddCert(c)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return fmt.Errorf("cluster.tls.cert_file %s is not a member certificate of ca_file %s (it must be signed by that CA, valid now, and allow use as both TLS server and client): %w", t.CertFile, t.CAFile, err)
		}
	}
	return nil
}

// CertReloader keeps this member's raft certificate current while serve runs (certreload):
// renewed cert_file and key_file are read again without a restart, and a replacement is used
// only if it passes the checks of the start, against roots (the CA pool read at start) and
// the host of this node's raft_addr. o gives the use, the check interval and the logger.
func (cl Cluster) CertReloader(roots *x509.CertPool, o certreload.Options) (*certreload.Reloader, error) {
	t := cl.TLS
	o.CertFile, o.KeyFile = t.CertFile, t.KeyFile
	o.Load = func() (tls.Certificate, error) {
		cert, err := t.LoadCert(roots)
		if err != nil {
			return cert, err
		}
		return cert, cl.namesRaftHost(cert)
	}
	return certreload.New(o)
}

// namesRaftHost checks that cert names the host of this node's raft_addr in cluster.peers:
// the other members dial that host and accept this node's certificate only if it names it.
func (cl Cluster) namesRaftHost(cert tls.Certificate) error {
	self, ok := cl.Self()
	if !ok {
		return nil
	}
	host, _, err := net.SplitHostPort(self.RaftAddr)
	if err != nil || host == "" {
		return nil
	}
	if err := cert.Leaf.VerifyHostname(host); err != nil {
		return fmt.Errorf("cluster.tls.cert_file %s does not name %s, the host of this node's raft_addr in cluster.peers, which the other members dial and check its certificate against: %w", cl.TLS.CertFile, host, err)
	}
	return nil
}

func (t ClusterTLS) missing() []string {
	var out []string
	for _, f := range []struct{ key, v string }{{"cert_file", t.CertFile}, {"key_file", t.KeyFile}, {"ca_file", t.CAFile}} {
		if f.v == "" {
			out = append(out, f.key)
		}
	}
	return out
}

// readPEM reads the file of cluster.tls.<key> and checks that it holds a PEM block whose type
// ends in kind ("CERTIFICATE", "PRIVATE KEY": RSA, EC and PKCS#8 keys alike).
func readPEM(key, path, kind string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cluster.tls.%s %s: %w", key, path, err)
	}
	for rest := data; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil, fmt.Errorf("cluster.tls.%s %s: no PEM %s in it", key, path, strings.ToLower(kind))
		}
		if strings.HasSuffix(b.Type, kind) {
			return data, nil
		}
	}
}

// refuseInsecureRaft is the refusal of a raft address that listens beyond loopback without
// TLS (the tests and docs/cluster.md quote it).
const refuseInsecureRaft = "is not a loopback address and the raft transport is not authenticated: " +
	"anyone who can reach the port could send raft messages and copy snapshot files, and so rewrite or read every acknowledged message. " +
	"Set cluster.tls (cert_file, key_file, ca_file: mutual TLS between the members, docs/cluster.md), " +
	"or set cluster.insecure_transport: true if a private network admits nothing but the members"

// validateTransport checks how the raft port is guarded: a listen address beyond loopback
// needs mutual TLS or the operator's explicit insecure_transport; auth.tokens do not count,
// since they guard the HTTP and text doors only. The TLS files are read here, so that a
// missing or bad file stops the start before anything is opened.
func (cl Cluster) validateTransport() []error {
	var errs []error
	if cl.TLS.Enabled() {
		if cert, _, err := cl.TLS.Load(); err != nil {
			errs = append(errs, err)
		} else if err := cl.namesRaftHost(cert); err != nil {
			errs = append(errs, err)
		}
		if cl.InsecureTransport {
			errs = append(errs, errors.New("cluster.insecure_transport and cluster.tls exclude each other: remove insecure_transport to use TLS"))
		}
	}
	la := cl.ListenRaftAddr()
	if la == "" || IsLoopback(la) || cl.TLS.Enabled() || cl.InsecureTransport {
		return errs
	}
	if _, _, err := net.SplitHostPort(la); err == nil {
		errs = append(errs, fmt.Errorf("cluster.raft_addr %q %s", la, refuseInsecureRaft))
	}
	return errs
}
