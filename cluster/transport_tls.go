package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"
)

// Mutual TLS on the raft port. Whatever travels over the raft address (the raft message
// stream, snapshot file copies, join questions) can rewrite or read every acknowledged
// message, so with a PeerTLS every connection is TLS 1.2 or later (1.3 when both ends have it,
// which every Go build does) and both ends prove they are members:
//
//   - the listening member requires a client certificate and verifies it against the cluster's
//     CA: a certificate that CA signed is a member's. The hello's ids are then checked as on a
//     plain connection, and the certificate is bound to the sender the hello names
//     (checkSender): a raft stream only from a known member whose raft host it names. The CA
//     must still sign nothing but the members' certificates (a CA of the cluster's own, never
//     a company-wide one): anything it signed may copy snapshot files and ask to join;
//   - the dialling member verifies the listener's certificate against the same CA and requires
//     its DNS or IP SANs to cover the host it dialled (the host of the peer's raft_addr): a
//     member given a wrong or spoofed address reaches no impostor, and a member certificate
//     only answers for the addresses it names.
//
// Every member uses one certificate for both roles, so each needs the serverAuth and
// clientAuth extended key usages (or none) and SANs for the host the other members dial.
// Without a PeerTLS the port speaks plain TCP with no authentication: the configuration allows
// that on loopback only, or when the operator says a private network guards the port
// (internal/config, cluster.insecure_transport).

// ErrPeerTLS marks a certificate or CA that cannot make the raft transport's TLS.
var ErrPeerTLS = errors.New("raft transport TLS")

// PeerTLS is the mutual TLS of the raft transport: this member's certificate and key, and the
// CA pool that signed every member's certificate. Its String hides the key.
type PeerTLS struct {
	server *tls.Config
	client *tls.Config // ServerName is set per dial
	// certificate is the member's certificate at this moment (it may be renewed while the
	// transport runs); it names the member in logs.
	certificate func() *tls.Certificate
}

// handshakeTimeout bounds a TLS handshake on an accepted connection: a stranger that connects
// and says nothing holds a goroutine no longer than this.
const handshakeTimeout = 10 * time.Second

// NewPeerTLS makes the raft transport's TLS from this member's certificate (with its key) and
// the pool of the CA that signed every member's certificate. The certificate is fixed; see
// NewRenewablePeerTLS for one that is renewed while the transport runs.
func NewPeerTLS(cert tls.Certificate, roots *x509.CertPool) (*PeerTLS, error) {
	if len(cert.Certificate) == 0 || cert.PrivateKey == nil {
		return nil, fmt.Errorf("%w: the member certificate or its key is missing", ErrPeerTLS)
	}
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("%w: parse the member certificate: %w", ErrPeerTLS, err)
		}
		cert.Leaf = leaf
	}
	return NewRenewablePeerTLS(func() *tls.Certificate { return &cert }, roots)
}

// NewRenewablePeerTLS makes the raft transport's TLS with a certificate that certificate
// returns anew for every handshake, as listener and as dialler alike: a renewed certificate
// is presented from the next connection on, without a restart (connections already made keep
// theirs). certificate must return a certificate with its key and its Leaf parsed, never nil;
// imago serve passes a certreload.Reloader's Certificate. The CA pool is fixed.
func NewRenewablePeerTLS(certificate func() *tls.Certificate, roots *x509.CertPool) (*PeerTLS, error) {
	if certificate == nil {
		return nil, fmt.Errorf("%w: no member certificate", ErrPeerTLS)
	}
	if c := certificate(); c == nil || len(c.Certificate) == 0 || c.PrivateKey == nil || c.Leaf == nil {
		return nil, fmt.Errorf("%w: the member certificate, its key or its parsed leaf is missing", ErrPeerTLS)
	}
	if roots == nil {
		return nil, fmt.Errorf("%w: no CA to verify the other members with", ErrPeerTLS)
	}
	server := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return certificate(), nil },
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      roots,
	}
	client := &tls.Config{
		MinVersion:           tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return certificate(), nil },
		RootCAs:              roots,
	}
	return &PeerTLS{server: server, client: client, certificate: certificate}, nil
}

// String names the member certificate in use and never its key.
func (p *PeerTLS) String() string {
	if p == nil {
		return "raft TLS off"
	}
	return fmt.Sprintf("raft TLS (certificate %q, key redacted)", p.certificate().Leaf.Subject.String())
}

// GoString keeps the key out of %#v output.
func (p *PeerTLS) GoString() string { return p.String() }

// dialPeer connects to a member's raft address: plain TCP without tls, otherwise TLS with the
// handshake done, the member's certificate verified against the CA and its SANs covering the
// dialled host. timeout 0 leaves the bound to ctx.
func dialPeer(ctx context.Context, p *PeerTLS, addr string, timeout time.Duration) (net.Conn, error) {
	nd := &net.Dialer{Timeout: timeout}
	if p == nil {
		return nd.DialContext(ctx, "tcp", addr)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	cfg := p.client.Clone()
	cfg.ServerName = host
	d := &tls.Dialer{NetDialer: nd, Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("TLS to %s: %w", addr, err)
	}
	return conn, nil
}

// acceptPeer turns an accepted connection into one with a member: c itself without TLS,
// otherwise the TLS server side after a handshake that verified the client's certificate.
// On an error the caller closes c.
func (t *Transport) acceptPeer(c net.Conn) (net.Conn, error) {
	if t.cfg.TLS == nil {
		return c, nil
	}
	tc := tls.Server(c, t.cfg.TLS.server)
	ctx, cancel := context.WithTimeout(t.ctx, handshakeTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// checkSender binds a TLS connection's hello to the member certificate that opened it: the
// certificate must name the host of the raft address this member has for the id the hello
// says it comes from, as a dial to that member would require of it. Without this, any member's
// certificate could speak as any other member (votes, appends in its name). A raft message
// stream from an id this member does not know is refused too over TLS: raft follows a leader it
// does not know, so a stranger's id with a high term could take the cluster over; a member that
// lags and has not applied a newcomer's addition yet drops its messages, which raft sends again.
// Snapshot file copies and the join question come from nodes that may not be known yet; their
// certificate is still one of the cluster's CA. Plain connections are not checked (no TLS).
func (t *Transport) checkSender(c net.Conn, from uint64, stream bool) error {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	t.pmu.RLock()
	p := t.peers[from]
	t.pmu.RUnlock()
	if p == nil {
		if stream {
			return fmt.Errorf("%w: node %d is not a member this node knows", ErrPeerTLS, from)
		}
		return nil
	}
	host, _, err := net.SplitHostPort(p.addr)
	if err != nil {
		return fmt.Errorf("%w: node %d's raft address %q: %w", ErrPeerTLS, from, p.addr, err)
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return fmt.Errorf("%w: no client certificate", ErrPeerTLS)
	}
	if err := certs[0].VerifyHostname(host); err != nil {
		return fmt.Errorf("%w: the certificate of %q does not name %s, the host of node %d's raft address %s: %w",
			ErrPeerTLS, certs[0].Subject.CommonName, host, from, p.addr, err)
	}
	return nil
}
