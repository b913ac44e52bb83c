package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/replica"
)

// This file holds the door's cluster mode (docs/http-api.md, "Cluster"): every node accepts
// every request, and a node that does not serve (it is not the leader, or a leader that has
// not yet applied an entry of its term) hands it to the leader, by proxy or by a 307
// redirect. GET /v1/cluster answers the node's own view and is never forwarded.
//
// The decision is made in wrap, after auth (the leader checks the token again: the proxy
// carries the Authorization header through), for every route but the local ones
// (clusterRouteKind). What a request learns:
//
//   - the leader's answer, with Imago-Leader: <id> (every answer of a node that knows a leader
//     carries it);
//   - 503 no_leader with Retry-After while no leader is known, when the node is a leader that
//     does not serve yet, when a forwarded request reaches a node that does not serve (it is
//     never forwarded twice), and when the leader could not be dialled: nothing was sent;
//   - 503 outcome_unknown with Retry-After when a forwarded write got no answer: the leader
//     may have applied it; a retry with the same Idempotency-Key (or global transaction id)
//     returns the first outcome. A forward also ends so when this node learns of another
//     leader before the one it forwarded to answered (that one was paused or cut off:
//     cluster_watch.go), rather than waiting for the client to give up.

// Cluster is the cluster member the door reports on and forwards for (*replica.Member).
type Cluster interface {
	Status() replica.Status
	Self() replica.Peer
	Leader() (replica.Peer, bool)
	Serving() bool
	// RefusedConnections counts the connections the raft port refused, by reason
	// (imago_raft_refused_connections_total).
	RefusedConnections() map[string]uint64
}

// Forward modes of Options.Forward.
const (
	ForwardProxy    = "proxy"
	ForwardRedirect = "redirect"
)

// clusterRoute says what a node that does not serve does with a route.
type clusterRoute int

const (
	routeLeader   clusterRoute = iota // forwarded to the leader
	routeLocal                        // answered by the node itself (health, metrics, /v1/cluster, 404s)
	routeFetch                        // forwarded, unless ?allow_follower=true
	routeReadSafe                     // forwarded; the leader confirms its leadership first (ReadBarrier)
)

const fetchPattern = "/v1/topics/{topic}/partitions/{partition}/messages"

// groupPollPattern is a group member's poll. The leader confirms its leadership before it
// answers, as for a fetch: a leader deposed without noticing yet would deliver, from its own
// cursors, messages that the partition's owner under the new leader has processed and
// committed since (cluster_groups.go).
const groupPollPattern = "/v1/groups/{group}/members/{member}/messages"

// clusterRouteKind classifies a route pattern (routes.go) for cluster mode.
func clusterRouteKind(pattern string) clusterRoute {
	switch pattern {
	case "/healthz", "/readyz", "/metrics", "/openapi.yaml", "/v1/cluster", "unmatched":
		return routeLocal
	case fetchPattern:
		return routeFetch
	case "/v1/xa/recover", groupPollPattern:
		return routeReadSafe
	}
	return routeLeader
}

// forwardTransport is the one transport of the proxy to the leader: kept-alive connections,
// enough idle ones per host that 64 concurrent clients of a follower reuse them instead of
// dialling the leader for each request, and a short dial timeout so that a dead leader is
// reported quickly (no_leader: nothing was sent).
func forwardTransport(tlsConfig *tls.Config) *http.Transport {
	return &http.Transport{
		TLSClientConfig:     forwardClientTLS(tlsConfig), // nil with plain HTTP
		TLSHandshakeTimeout: 2 * time.Second,
		Proxy:               nil, // never an environment proxy between members
		DialContext: (&net.Dialer{
			Timeout:   2 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true, // pass bodies through as they are
	}
}

// leaderCtxKey carries a forward (*forwarding), from the gate to the proxy's Rewrite,
// ModifyResponse and ErrorHandler.
type leaderCtxKey struct{}

// forwarding is one request on its way to the leader.
type forwarding struct {
	leader replica.Peer
	// answered is closed when the leader's answer arrived: from then on a change of leader no
	// longer ends the forward.
	answered     chan struct{}
	answeredOnce sync.Once
}

func (fw *forwarding) markAnswered() { fw.answeredOnce.Do(func() { close(fw.answered) }) }

// errLeaderChanged ends a forward whose leader was replaced before it answered.
var errLeaderChanged = errors.New("the leader changed while the request was forwarded")

func forwardOf(ctx context.Context) *forwarding {
	fw, _ := ctx.Value(leaderCtxKey{}).(*forwarding)
	if fw == nil {
		return &forwarding{}
	}
	return fw
}

// forwarder proxies requests to the leader.
type forwarder struct {
	s         *Server
	transport *http.Transport
	proxy     *httputil.ReverseProxy
	selfID    string
}

func newForwarder(s *Server, self replica.Peer) *forwarder {
	f := &forwarder{s: s, transport: forwardTransport(s.opts.ForwardTLS), selfID: strconv.FormatUint(self.ID, 10)}
	f.proxy = &httputil.ReverseProxy{
		Rewrite:        f.rewrite,
		Transport:      f.transport,
		ModifyResponse: f.modifyResponse,
		ErrorHandler:   f.failed,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BufferPool:     proxyBuffers{},
	}
	return f
}

// proxyBuffers lends the proxy its body-copy buffers (it would allocate and clear 32 KiB per
// request otherwise).
type proxyBuffers struct{}

var proxyBufferPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (proxyBuffers) Get() []byte { return *proxyBufferPool.Get().(*[]byte) }

func (proxyBuffers) Put(b []byte) {
	if cap(b) == 32<<10 {
		b = b[:cap(b)]
		proxyBufferPool.Put(&b)
	}
}

// rewrite points the outgoing request at the leader. Headers (Authorization,
// Idempotency-Key, ...) pass through; hop-by-hop ones are dropped by the proxy.
func (f *forwarder) rewrite(pr *httputil.ProxyRequest) {
	leader := forwardOf(pr.In.Context()).leader
	pr.Out.URL.Scheme = f.s.memberScheme()
	pr.Out.URL.Host = leader.HTTPAddr
	pr.Out.Host = ""
	pr.SetXForwarded()
	pr.Out.Header.Set(api.HeaderForwardedBy, f.selfID)
	f.s.signForward(pr.Out, f.selfID, pr.In.RemoteAddr) // the client's address, for the leader's audit records
	if m := pr.Out.Method; m != http.MethodGet && m != http.MethodHead && (pr.Out.Body == nil || pr.Out.Body == http.NoBody) {
		// Go's transport resends a bodiless request that carries an Idempotency-Key when a
		// kept-alive connection dies after the leader read it: the leader could then apply a
		// commit twice, or the re-dial failing would be answered "nothing was sent". A body
		// that is neither nil nor http.NoBody makes the request not replayable.
		pr.Out.Body = io.NopCloser(strings.NewReader(""))
		pr.Out.ContentLength = 0
	}
}

// modifyResponse marks the forward answered and keeps the leader's Imago-Leader, or adds it.
func (f *forwarder) modifyResponse(resp *http.Response) error {
	fw := forwardOf(resp.Request.Context())
	fw.markAnswered()
	if resp.Header.Get(api.HeaderLeader) == "" {
		resp.Header.Set(api.HeaderLeader, strconv.FormatUint(fw.leader.ID, 10))
	}
	return nil
}

// failed answers a forward that got no answer from the leader.
func (f *forwarder) failed(w http.ResponseWriter, r *http.Request, err error) {
	leader := forwardOf(r.Context()).leader
	if errors.Is(context.Cause(r.Context()), errLeaderChanged) {
		if now, ok := f.s.cluster.Leader(); ok {
			w.Header().Set(api.HeaderLeader, strconv.FormatUint(now.ID, 10))
		} else {
			w.Header().Del(api.HeaderLeader)
		}
		f.s.log.Warn("the leader changed while a request was forwarded to it", "leader", leader.ID,
			"method", r.Method, "path", r.URL.Path)
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			f.s.writeError(w, r, noLeaderError("the leader (node %d) was replaced before it answered; retry after Retry-After", leader.ID))
			return
		}
		f.s.writeError(w, r, newError(http.StatusServiceUnavailable, api.CodeOutcomeUnknown,
			"the request was forwarded to the leader (node %d), which was replaced before it answered: it may or may not have been applied; "+
				"retry with the same Idempotency-Key (or global transaction id), which returns the first outcome", leader.ID))
		return
	}
	w.Header().Set(api.HeaderLeader, strconv.FormatUint(leader.ID, 10))
	if r.Context().Err() != nil { // the client went away: nobody reads this answer
		f.s.writeError(w, r, newError(http.StatusServiceUnavailable, api.CodeCanceled,
			"the request was canceled while it was forwarded to the leader (node %d)", leader.ID))
		return
	}
	f.s.log.Warn("forward to the leader failed", "leader", leader.ID, "leader_addr", leader.HTTPAddr,
		"method", r.Method, "path", r.URL.Path, "err", err)
	var oe *net.OpError
	switch {
	case tlsHandshakeFailed(err):
		f.s.writeError(w, r, newError(http.StatusServiceUnavailable, api.CodeNoLeader,
			"the leader (node %d at %s) could not be reached over TLS (its certificate is not trusted by http.tls.ca_file, or it refused this member's): nothing was sent; check http.tls on both members", leader.ID, leader.HTTPAddr))
	case errors.As(err, &oe) && oe.Op == "dial":
		f.s.writeError(w, r, newError(http.StatusServiceUnavailable, api.CodeNoLeader,
			"the leader (node %d at %s) could not be reached; nothing was sent: retry after Retry-After", leader.ID, leader.HTTPAddr))
	case r.Method == http.MethodGet || r.Method == http.MethodHead:
		f.s.writeError(w, r, newError(http.StatusServiceUnavailable, api.CodeNoLeader,
			"the leader (node %d at %s) did not answer; retry after Retry-After", leader.ID, leader.HTTPAddr))
	default:
		f.s.writeError(w, r, newError(http.StatusServiceUnavailable, api.CodeOutcomeUnknown,
			"the request was forwarded to the leader (node %d at %s), which did not answer: it may or may not have been applied; "+
				"retry with the same Idempotency-Key (or global transaction id), which returns the first outcome", leader.ID, leader.HTTPAddr))
	}
}

// errNoClientCertificate ends a forward's handshake when the leader asks for a client
// certificate that this member does not have (none, or none of a CA the leader accepts).
var errNoClientCertificate = errors.New("the leader asks for a client certificate of a CA it accepts, and this member has none (http.tls cert_file)")

// forwardClientTLS is cfg with the member's certificates offered through
// GetClientCertificate, which refuses to go on when none suits the leader: with TLS 1.3 a
// leader that refuses the certificate says so only after the request was written, and the
// connection may then just end, which reads like a leader that died with the request. Ending
// the handshake here keeps "nothing was sent" certain (tlsHandshakeFailed).
func forwardClientTLS(cfg *tls.Config) *tls.Config {
	if cfg == nil {
		return nil
	}
	cfg = cfg.Clone()
	certs, get := cfg.Certificates, cfg.GetClientCertificate // get: a renewable certificate (certreload)
	cfg.Certificates = nil
	cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if get != nil {
			c, err := get(cri)
			if err != nil {
				return nil, err
			}
			if c != nil && len(c.Certificate) > 0 && cri.SupportsCertificate(c) == nil {
				return c, nil
			}
			return nil, errNoClientCertificate
		}
		for i := range certs {
			if cri.SupportsCertificate(&certs[i]) == nil {
				return &certs[i], nil
			}
		}
		return nil, errNoClientCertificate
	}
	return cfg
}

// tlsHandshakeFailed reports whether err ended a forward in the TLS handshake, so that the
// leader cannot have read the request: its certificate not trusted here, a leader speaking
// plain HTTP, or the leader's alert refusing this member's certificate (with TLS 1.3 that
// alert comes after the request was written, but the leader's handshake failed before it read
// any of it; alerts about certificates are sent only in the handshake).
func tlsHandshakeFailed(err error) bool {
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	var oe *net.OpError
	return errors.As(err, &cv) || errors.As(err, &rh) || errors.Is(err, errNoClientCertificate) ||
		errors.As(err, &oe) && oe.Op == "remote error" && strings.Contains(oe.Err.Error(), "certificate")
}

// forward proxies r to leader. A change of leader before the leader's answer arrived ends
// the forward (failed answers it).
func (f *forwarder) forward(w http.ResponseWriter, r *http.Request, leader replica.Peer) {
	w.Header().Del(api.HeaderLeader) // the leader's answer carries its own
	fw := &forwarding{leader: leader, answered: make(chan struct{})}
	ctx, cancel := context.WithCancelCause(context.WithValue(r.Context(), leaderCtxKey{}, fw))
	defer cancel(nil)
	changed := f.s.watch.changedFrom(leader.ID)
	go func() {
		select {
		case <-changed:
			select {
			case <-fw.answered:
			default:
				cancel(errLeaderChanged)
			}
		case <-fw.answered:
		case <-ctx.Done():
		}
	}()
	f.proxy.ServeHTTP(w, r.WithContext(ctx))
}

// memberScheme is the scheme of the members' HTTP doors: https when they serve http.tls.
func (s *Server) memberScheme() string {
	if s.opts.ForwardTLS != nil {
		return "https"
	}
	return "http"
}

// close drops the idle connections to the leader.
func (f *forwarder) close() { f.transport.CloseIdleConnections() }

// setLeaderHeader adds Imago-Leader to the answer when a leader is known.
func (s *Server) setLeaderHeader(w http.ResponseWriter) {
	if leader, ok := s.cluster.Leader(); ok {
		w.Header()[api.HeaderLeader] = []string{strconv.FormatUint(leader.ID, 10)}
	}
}

// clusterGate decides, for a route that only the leader answers, whether this node answers r
// itself (false, nil), has answered it by forwarding or redirecting (true, nil), or must
// refuse it (false, err).
func (s *Server) clusterGate(w http.ResponseWriter, r *http.Request, kind clusterRoute) (bool, error) {
	c := s.cluster
	if kind == routeFetch {
		allow, err := allowFollower(r)
		if err != nil {
			return false, err
		}
		if allow {
			return false, nil
		}
	}
	if c.Serving() {
		if kind == routeFetch || kind == routeReadSafe {
			if rb, ok := c.(ReadBarrier); ok {
				if err := rb.ReadBarrier(r.Context()); err != nil {
					if errors.Is(err, broker.ErrNotLeader) {
						return false, noLeaderError("this node lost leadership while confirming it with a quorum; nothing was done, retry after Retry-After")
					}
					return false, err
				}
			}
		}
		return false, nil
	}
	if by := r.Header.Get(api.HeaderForwardedBy); by != "" {
		return false, noLeaderError("node %s forwarded this request here as to the leader, but this node does not serve: leadership is changing; nothing was done, retry after Retry-After", strconv.Quote(by))
	}
	leader, ok := c.Leader()
	if !ok {
		return false, noLeaderError("no cluster leader is known (an election is under way, or this node cannot reach a quorum); nothing was done, retry after Retry-After")
	}
	if leader.ID == c.Self().ID {
		return false, noLeaderError("this node was just elected leader and accepts requests once it has applied an entry of its term; nothing was done, retry after Retry-After")
	}
	if s.opts.Forward == ForwardRedirect {
		w.Header().Set("Location", s.memberScheme()+"://"+leader.HTTPAddr+r.URL.RequestURI())
		w.WriteHeader(http.StatusTemporaryRedirect)
		return true, nil
	}
	s.fwd.forward(w, r, leader)
	return true, nil
}

// ReadBarrier is implemented by a cluster member whose leader can confirm its leadership with
// a quorum before a read (replica.Member): fetches served by the leader, and reads that decide
// something (xa recover), wait for it, so that a deposed leader that has not noticed yet never
// answers from stale state. A follower's allow_follower fetch does not: it may be behind, by
// contract.
type ReadBarrier interface {
	ReadBarrier(ctx context.Context) error
}

func noLeaderError(format string, args ...any) *apiError {
	return newError(http.StatusServiceUnavailable, api.CodeNoLeader, format, args...)
}

// allowFollower reads the fetch's allow_follower parameter (absent: false).
func allowFollower(r *http.Request) (bool, error) {
	v, ok := r.URL.Query()["allow_follower"]
	if !ok {
		return false, nil
	}
	if len(v) != 1 {
		return false, paramError("allow_follower", "appears twice; send it once")
	}
	b, err := strconv.ParseBool(v[0])
	if err != nil {
		return false, paramError("allow_follower", "must be true or false, not %q", v[0])
	}
	return b, nil
}

// handleCluster answers GET /v1/cluster from this node's own view (never forwarded).
func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) error {
	if s.cluster == nil {
		return newError(http.StatusNotFound, api.CodeNotFound,
			"this server is not a cluster member: its configuration has no cluster block (docs/cluster.md)")
	}
	return writeJSON(w, http.StatusOK, s.cluster.Status())
}

// clusterReady is /readyz's cluster check: the member runs and knows a leader.
func (s *Server) clusterReady() error {
	if st := s.cluster.Status(); st.Error != "" {
		return newError(http.StatusServiceUnavailable, api.CodeNotReady, "the cluster member stopped: %s; the process must be restarted", st.Error)
	}
	if _, ok := s.cluster.Leader(); !ok {
		return noLeaderError("no cluster leader is known (an election is under way, or this node cannot reach a quorum)")
	}
	st := s.cluster.Status()
	// Measured against what a leader said the cluster committed, not the member's own commit
	// index: that one never passes the member's log, so a member far behind would look current.
	committed := max(st.CommitIndex, st.LeaderCommitIndex)
	if bound := s.opts.MaxApplyLag; bound > 0 && committed > st.AppliedIndex+bound {
		return newError(http.StatusServiceUnavailable, api.CodeNotReady,
			"this member has applied raft index %d of the %d the leader has committed: more than %d behind (it is catching up)", st.AppliedIndex, committed, bound)
	}
	return nil
}
