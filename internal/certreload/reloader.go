// Package certreload keeps a TLS certificate and key read from files current while the
// process runs, so that a renewed certificate (cert-manager, an internal PKI issuing
// certificates valid for days or hours) is used without a restart.
//
// The rule:
//
//   - A Reloader reads the pair once when it is made; that read is the start-up check, and its
//     error (naming the configuration key and the files) stops the process as before.
//   - On use, at most once per Interval (default 5 s), it looks at the files' identity, size
//     and modification time (os.Stat, following symbolic links, as a Kubernetes secret volume
//     needs). "On use" is every TLS handshake that asks it for a certificate and every scrape of
//     the expiry metric: no goroutine is needed, and a door nobody connects to is still
//     checked by the metric scrape. A handshake that finds a check under way does not wait: it
//     gets the certificate in use.
//   - When anything changed it reads the pair again with the same function as at start. A pair
//     that reads and checks well replaces the one in use for every handshake from then on
//     (connections already open keep theirs). One that does not (a file half-written, a key
//     that is not the certificate's, a certificate the cluster's CA did not sign) is refused:
//     the last good pair is served on and one ERROR names the files and the reason, once per
//     change of the files, never the key material. A refused pair is read again at every look,
//     so one that only had to wait (a raft certificate not valid yet, its NotBefore a few
//     seconds ahead of this clock) is taken once it passes.
//   - CA bundles are not reloaded: a new CA takes a restart.
package certreload

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is how often at most a Reloader looks at its files when Options.Interval
// is zero: a renewal is in use within seconds, and a busy door costs one stat per file per
// interval.
const DefaultInterval = 5 * time.Second

// Options says what a Reloader reads and how often it looks.
type Options struct {
	// Use names what the certificate serves ("http", "protocol", "raft"): the use label of the
	// expiry metric and a key in the logs.
	Use string
	// CertFile and KeyFile are the files watched for a change; Load reads them.
	CertFile, KeyFile string
	// Load reads the pair and checks it as the start does. Its error names the key and the
	// files and never quotes the key.
	Load func() (tls.Certificate, error)
	// Interval is how often at most the files are looked at; zero: DefaultInterval.
	Interval time.Duration
	// Logger receives the reloads (INFO) and the refused replacements (ERROR); nil: discard.
	Logger *slog.Logger
}

// Reloader holds the certificate in use for one TLS use and replaces it when its files change.
type Reloader struct {
	opts Options
	cur  atomic.Pointer[tls.Certificate]

	mu sync.Mutex // one look at the files at a time; guards the fields below
	// next is when the files may be looked at again.
	next time.Time
	// read is the state of the files when the pair in use was read; refused the state of
	// the last replacement that was refused (logged once, tried again at every look).
	read, refused stamp
}

// New reads the pair with o.Load and returns a Reloader serving it, or Load's error.
func New(o Options) (*Reloader, error) {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Reloader{opts: o}
	// Stat before the read: a change while reading shows at the next look, and is read then.
	r.read = r.stat()
	cert, err := r.load()
	if err != nil {
		return nil, err
	}
	r.cur.Store(cert)
	r.next = time.Now().Add(o.Interval)
	return r, nil
}

// Use is the use the Reloader was made for.
func (r *Reloader) Use() string { return r.opts.Use }

// Certificate is the pair in use, after a look at the files if Interval has passed since the
// last one. Its Leaf is set.
func (r *Reloader) Certificate() *tls.Certificate {
	r.maybeReload()
	return r.cur.Load()
}

// GetCertificate is tls.Config.GetCertificate for a listener.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Certificate(), nil
}

// GetClientCertificate is tls.Config.GetClientCertificate for a dialler that presents the pair.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.Certificate(), nil
}

// NotAfter is when the certificate in use expires (after a look at the files, as Certificate).
func (r *Reloader) NotAfter() time.Time { return r.Certificate().Leaf.NotAfter }

// maybeReload looks at the files when Interval has passed and no other look is under way.
func (r *Reloader) maybeReload() {
	if !r.mu.TryLock() {
		return
	}
	defer r.mu.Unlock()
	now := time.Now()
	if now.Before(r.next) {
		return
	}
	r.next = now.Add(r.opts.Interval)
	st := r.stat()
	if st.same(r.read) {
		return
	}
	log := r.opts.Logger.With("use", r.opts.Use, "cert_file", r.opts.CertFile, "key_file", r.opts.KeyFile)
	cert, err := r.load()
	if err != nil {
		if st.same(r.refused) {
			return // logged when the files changed to this
		}
		r.refused = st
		log.Error("the TLS certificate files changed but cannot be used: still serving the certificate read before; fix the files (a renewal that writes them in turn is retried at its next write)",
			"err", err, "serving_subject", r.cur.Load().Leaf.Subject.String(), "serving_not_after", r.cur.Load().Leaf.NotAfter)
		return
	}
	r.read, r.refused = st, stamp{}
	r.cur.Store(cert)
	log.Info("TLS certificate reloaded", "subject", cert.Leaf.Subject.String(), "serial", cert.Leaf.SerialNumber.String(), "not_after", cert.Leaf.NotAfter)
}

// load reads the pair with Options.Load and makes sure its Leaf is parsed.
func (r *Reloader) load() (*tls.Certificate, error) {
	cert, err := r.opts.Load()
	if err != nil {
		return nil, err
	}
	if len(cert.Certificate) == 0 {
		return nil, fmt.Errorf("%s certificate %s: %w", r.opts.Use, r.opts.CertFile, errNoCertificate)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s certificate %s: %w", r.opts.Use, r.opts.CertFile, err)
		}
	}
	return &cert, nil
}

var errNoCertificate = errors.New("no certificate in it")

// stamp is what a look at the files sees: each file's identity, size and modification time,
// or that it could not be read.
type stamp struct {
	files [2]os.FileInfo
	errs  [2]string
	set   bool
}

func (r *Reloader) stat() stamp {
	st := stamp{set: true}
	for i, f := range []string{r.opts.CertFile, r.opts.KeyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			st.errs[i] = err.Error()
			continue
		}
		st.files[i] = fi
	}
	return st
}

// same reports whether two looks saw the same files: a file replaced by rename is another
// file even with the same size and time.
func (s stamp) same(o stamp) bool {
	if !s.set || !o.set {
		return false
	}
	for i := range s.files {
		a, b := s.files[i], o.files[i]
		if s.errs[i] != o.errs[i] || (a == nil) != (b == nil) {
			return false
		}
		if a != nil && (!os.SameFile(a, b) || a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime())) {
			return false
		}
	}
	return true
}
