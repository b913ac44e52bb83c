package config

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
)

// TestValidateClusterTransport: a raft address beyond loopback is refused unless cluster.tls
// (mutual TLS, whose files must be usable) or cluster.insecure_transport is set; auth.tokens
// no longer let it through. Loopback needs neither.
func TestValidateClusterTransport(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "imago cluster CA")
	cert, key, caFile := ca.WriteFiles(t, dir, "node1", "10.0.0.1")
	other := testenv.NewCA(t, "someone else's CA")
	otherDir := t.TempDir()
	otherCert, otherKey, _ := other.WriteFiles(t, otherDir, "node1", "10.0.0.1")
	_, key2, _ := ca.WriteFiles(t, t.TempDir(), "node2", "10.0.0.2")
	// A PKI's usual chain: the member's certificate signed by an intermediate CA, which cert_file
	// holds after it, and the root in ca_file.
	interCert, interKey, rootFile := ca.Intermediate(t, "issuing CA").WriteFiles(t, t.TempDir(), "node1", "10.0.0.1")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nope.crt")
	tlsFiles := func(cert, key, ca string) ClusterTLS { return ClusterTLS{CertFile: cert, KeyFile: key, CAFile: ca} }

	network := func(c *Config) {
		c.Offsets = Offsets{Store: "postgres", DSN: "postgres://x", GroupCommit: time.Millisecond}
		c.Auth.Tokens = []Token{{Name: "ops", Token: "t0k3n", Admin: true}}
		c.HTTP.Addr = "10.0.0.1:8081"
		c.Cluster.NodeID = 1
		c.Cluster.Peers = []ClusterPeer{
			{ID: 1, RaftAddr: "10.0.0.1:7081", HTTPAddr: "10.0.0.1:8081"},
			{ID: 2, RaftAddr: "10.0.0.2:7081", HTTPAddr: "10.0.0.2:8081"},
			{ID: 3, RaftAddr: "10.0.0.3:7081", HTTPAddr: "10.0.0.3:8081"},
		}
	}
	tests := []struct {
		name    string
		mutate  func(c *Config)
		wantErr []string // nil: valid
	}{
		{name: "network without tls refused", mutate: func(c *Config) {},
			wantErr: []string{`cluster.raft_addr "10.0.0.1:7081" is not a loopback address and the raft transport is not authenticated`, "Set cluster.tls", "cluster.insecure_transport: true"}},
		{name: "every interface without tls refused", mutate: func(c *Config) { c.Cluster.RaftAddr = ":7081" },
			wantErr: []string{`cluster.raft_addr ":7081" ` + refuseInsecureRaft}},
		{name: "network with tls", mutate: func(c *Config) { c.Cluster.TLS = tlsFiles(cert, key, caFile) }},
		{name: "certificate through an intermediate CA", mutate: func(c *Config) { c.Cluster.TLS = tlsFiles(interCert, interKey, rootFile) }},
		{name: "network with insecure transport", mutate: func(c *Config) { c.Cluster.InsecureTransport = true }},
		{name: "loopback without tls", mutate: func(c *Config) {
			c.HTTP.Addr = "127.0.0.1:8081"
			for i := range c.Cluster.Peers {
				c.Cluster.Peers[i].RaftAddr = strings.Replace(c.Cluster.Peers[i].RaftAddr, "10.0.0.", "127.0.0.", 1)
			}
		}},
		{name: "loopback with tls", mutate: func(c *Config) { c.Cluster.RaftAddr = "127.0.0.1:7081"; c.Cluster.TLS = tlsFiles(cert, key, caFile) }},
		{name: "tls and insecure transport", mutate: func(c *Config) { c.Cluster.TLS = tlsFiles(cert, key, caFile); c.Cluster.InsecureTransport = true },
			wantErr: []string{"cluster.insecure_transport and cluster.tls exclude each other"}},
		{name: "tls without key and ca", mutate: func(c *Config) { c.Cluster.TLS = ClusterTLS{CertFile: cert} },
			wantErr: []string{"cluster.tls: cert_file, key_file and ca_file are all required (missing: key_file, ca_file)"}},
		{name: "cert file missing", mutate: func(c *Config) { c.Cluster.TLS = tlsFiles(missing, key, caFile) },
			wantErr: []string{"cluster.tls.cert_file " + missing + ": no such file or directory"}},
		{name: "ca file missing", mutate: func(c *Config) { c.Cluster.TLS = tlsFiles(cert, key, missing) },
			wantErr: []string{"cluster.tls.ca_file " + missing + ": no such file or directory"}},
		{name: "cert file not PEM", mutate: func(c *Config) { c.Cluster.TLS = tlsFiles(garbage, key, caFile) },
			wantErr: []string{"cluster.tls.cert_file " + garbage + ": no PEM certificate in it"}},
		{name: "key file holds a certificate", mutate: func(c *Config) { c.Cluster.TLS = tlsFiles(cert, cert, caFile) },
			wantErr: []string{"cluster.tls.key_file " + cert + ": no PEM private key in it"}},
		{name: "ca file holds a key", mutate: func(c *Config) { c.Cluster.TLS = tlsFiles(cert, key, key) },
			wantErr: []string{"cluster.tls.ca_file " + key + ": no PEM certificate in it"}},
		{name: "key of another certificate", mutate: func(c *Config) { c.Cluster.TLS = tlsFiles(cert, key2, caFile) },
			wantErr: []string{"cluster.tls.cert_file " + cert + " with key_file " + key2 + ": tls: private key does not match public key"}},
		{name: "certificate for another host", mutate: func(c *Config) { c.Cluster.NodeID = 2; c.Cluster.TLS = tlsFiles(cert, key, caFile) },
			wantErr: []string{"cluster.tls.cert_file " + cert + " does not name 10.0.0.2, the host of this node's raft_addr"}},
		{name: "certificate of another CA", mutate: func(c *Config) { c.Cluster.TLS = tlsFiles(otherCert, otherKey, caFile) },
			wantErr: []string{"cluster.tls.cert_file " + otherCert + " is not a member certificate of ca_file " + caFile, "unknown authority"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			network(&c)
			tt.mutate(&c)
			err := c.Validate()
			checkErrs(t, err, tt.wantErr)
			if err != nil && strings.Contains(err.Error(), "PRIVATE KEY-----") {
				t.Fatalf("the error quotes a key: %v", err)
			}
		})
	}
}

// TestLoadClusterTLS: cluster.tls and cluster.insecure_transport come from the file or from
// IMAGO_CLUSTER_TLS_* and IMAGO_CLUSTER_INSECURE_TRANSPORT, and Load hands back a certificate
// with its key and the CA pool that verifies it.
func TestLoadClusterTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, "imago cluster CA")
	cert, key, caFile := ca.WriteFiles(t, dir, "node2", "127.0.0.1")
	c, err := load(writeFile(t, clusterFile+"  tls: {cert_file: "+cert+", key_file: "+key+", ca_file: "+caFile+"}\n"), envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.TLS != (ClusterTLS{CertFile: cert, KeyFile: key, CAFile: caFile}) {
		t.Fatalf("cluster.tls: %+v", c.Cluster.TLS)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("validate: %v", err)
	}
	pair, roots, err := c.Cluster.TLS.Load()
	if err != nil || pair.PrivateKey == nil || roots == nil {
		t.Fatalf("load: key %v, roots %v, err %v", pair.PrivateKey != nil, roots != nil, err)
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the loaded certificate does not verify against the loaded CA: %v", err)
	}

	c, err = load(writeFile(t, clusterFile), envMap(map[string]string{
		"IMAGO_CLUSTER_TLS_CERT_FILE": cert, "IMAGO_CLUSTER_TLS_KEY_FILE": key, "IMAGO_CLUSTER_TLS_CA_FILE": caFile,
		"IMAGO_CLUSTER_INSECURE_TRANSPORT": "true",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.TLS.CAFile != caFile || !c.Cluster.InsecureTransport {
		t.Fatalf("environment: tls %+v, insecure_transport %v", c.Cluster.TLS, c.Cluster.InsecureTransport)
	}
}
