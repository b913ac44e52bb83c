// Package gateway is Imago's HTTP/JSON door (docs/http-api.md): routes, auth, error mapping,
// long-poll fetch and metrics, over one *broker.Broker.
//
// The routes, and the token right each needs, are listed in one table (routes.go). Every
// error leaves through one function (errors.go) that maps broker sentinel errors to the
// statuses and codes of docs/http-api.md. The produce decoder and the fetch encoder are hand-written
// (produce_decode.go, fetch_encode.go) because they are the hot paths. On a cluster member
// (Options.Cluster) the door forwards what only the leader answers to the leader and reports
// the member (cluster.go, cluster_metrics.go).
package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/console"
	"github.com/imagomq/imago/groups"
	"github.com/imagomq/imago/internal/auth"
	"github.com/imagomq/imago/offsetdb"
	"github.com/imagomq/imago/xa"
	"github.com/prometheus/client_golang/prometheus"
)

// Token is one bearer token and its rights (internal/auth): Produce and Consume hold topic
// patterns (path.Match syntax, e.g. "settlement.*"); Admin allows topic creation and admin
// endpoints.
type Token = auth.Token

// Options configure a Server.
type Options struct {
	// Tokens enables bearer-token auth when non-empty.
	Tokens []Token
	// AutoCreateTopics creates unknown topics on produce with DefaultPartitions.
	AutoCreateTopics  bool
	DefaultPartitions int // default 1
	// MaxBodyBytes caps a request body; larger gets 413. Default 16 MiB.
	MaxBodyBytes int64
	// MaxWait caps a fetch's wait_ms. Default 30s.
	MaxWait time.Duration
	Logger  *slog.Logger
	Metrics *Metrics // from NewMetrics; nil disables /metrics content beyond the Go defaults
	Version string
	// Gatherer is what /metrics serves. Default: the registry given to NewMetrics when it is
	// a Gatherer, else prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
	// Ready, when set, is called by /readyz (with the request's context) to check resources
	// beyond the broker, such as databases; an error answers 503 with its text.
	Ready func(context.Context) error
	// Outbox, when set, reports the outbox relay sources for GET /v1/outbox/sources (outbox.go);
	// nil answers an empty list.
	Outbox OutboxStatus
	// Offsets is the consumer offset store of the /v1/groups endpoints (groups_http.go); nil
	// makes them answer 503 not_ready. The gateway does not close it.
	Offsets offsetdb.Store
	// Coordinator, when set, runs the /v1/global-transactions endpoints (global.go) and is
	// pinged by /readyz (every configured resource must answer); nil makes them answer 503
	// not_ready. The gateway does not close it.
	Coordinator Coordinator
	// Operations are the named SQL operations global transactions may run, compiled when the
	// configuration is loaded (xa.CompileOperations); New checks them against the
	// coordinator's resources.
	Operations *xa.Operations
	// Cluster, when set, makes this the door of a cluster member (cluster.go): requests only
	// the leader answers are forwarded to it while this node does not serve, answers carry
	// Imago-Leader, GET /v1/cluster reports the member, /readyz needs a known leader and
	// /metrics shows imago_raft_*. The gateway does not stop it.
	Cluster Cluster
	// Forward is what a member that does not serve does with such a request: ForwardProxy
	// (the default: send it to the leader and return its answer) or ForwardRedirect (307).
	Forward string
	// ForwardSecret (cluster mode), the same on every member, lets the leader trust the
	// client address a member says it forwarded a request for: the member signs it
	// (Imago-Forwarded-Sig), and the leader's audit records (an operator's resolve or
	// heuristic decision) name that client instead of the member (cluster_client.go). Empty:
	// nothing is signed, and a forwarded request is recorded by the member's address, marked
	// so.
	ForwardSecret []byte
	// ForwardTLS (cluster mode), when set, makes this member reach the leader's HTTP door over
	// HTTPS with it (the members serve http.tls): the forwards, and the Location of a redirect.
	// Its client certificate may change while the server runs (imago serve sets
	// GetClientCertificate to the renewed http.tls certificate): each new connection to the
	// leader presents the one in use then. nil: plain HTTP.
	ForwardTLS *tls.Config
	// MaxApplyLag (cluster mode): /readyz answers 503 not_ready while this member's applied
	// raft index is more than this many entries behind the commit index a leader announced (a node
	// catching up after a restart). 0 means DefaultMaxApplyLag.
	MaxApplyLag uint64
	// LeaderWatchInterval is how often the server looks at the leader, to count leader
	// changes (imago_raft_leader_changes_total) and to end forwards to a leader that was
	// replaced (cluster_watch.go). Default 100ms.
	LeaderWatchInterval time.Duration
}

// Defaults for Options fields left zero.
const (
	DefaultMaxBodyBytes = 16 << 20
	DefaultMaxWait      = 30 * time.Second
)

// backend is the part of *broker.Broker the gateway uses.
type backend interface {
	CreateTopic(name string, cfg broker.TopicConfig) (bool, error)
	Topics() []broker.TopicInfo
	Topic(name string) (broker.TopicInfo, error)
	Produce(ctx context.Context, topic string, msgs []broker.Message, idempotencyKey string) (broker.ProduceResult, error)
	Fetch(ctx context.Context, topic string, partition int, opts broker.FetchOptions) (*broker.FetchResult, error)
	WaitAny(ctx context.Context, wait time.Duration, at []broker.PartitionOffset) (bool, error)
	Stats() broker.Stats
	Err() error
	txBackend
}

// txBackend is the transactional part of *broker.Broker: local transactions (tx.go) and
// XA branches (xa.go).
type txBackend interface {
	BeginTx(timeout time.Duration) (string, error)
	AddTx(id string, msgs []broker.TxMessage) error
	CommitTx(ctx context.Context, id string) ([]broker.TopicPosition, error)
	RollbackTx(ctx context.Context, id string) error
	TxStatus(id string) (broker.TxInfo, error)
	XAStart(xid broker.Xid, flags string, timeout time.Duration) error
	XAAdd(xid broker.Xid, msgs []broker.TxMessage) error
	XAEnd(xid broker.Xid, flags string) error
	XAPrepare(ctx context.Context, xid broker.Xid) (readOnly bool, err error)
	XACommit(ctx context.Context, xid broker.Xid, onePhase bool) ([]broker.TopicPosition, error)
	XARollback(ctx context.Context, xid broker.Xid) error
	XAForget(ctx context.Context, xid broker.Xid) error
	XAHeuristic(ctx context.Context, xid broker.Xid, commit bool) error
	XARecover() []broker.Xid
	XAState(xid broker.Xid) (broker.TxState, bool)
}

// Server is the HTTP door.
type Server struct {
	b        backend
	opts     Options
	log      *slog.Logger
	auth     *authenticator
	metrics  *Metrics
	gatherer prometheus.Gatherer
	router   *chi.Mux
	// promHandler serves /metrics.
	promHandler http.Handler
	started     time.Time
	// groupsEpoch resets consumer groups when this cluster member's leadership changes.
	groupsEpoch groupsEpoch

	// closing ends long-poll waits; closed makes /readyz answer 503.
	closing context.Context
	stop    context.CancelFunc
	closed  atomic.Bool

	// groups coordinates the consumer groups; nil without Options.Offsets.
	groups *groups.Coordinator
	// global runs global transactions; nil without Options.Coordinator.
	global *globalState

	// cluster is Options.Cluster; fwd forwards to its leader (cluster.go). Both nil on a
	// single node.
	cluster Cluster
	fwd     *forwarder
	// watch follows the leader (cluster_watch.go); watchDone is closed when it has stopped.
	watch     *leaderWatch
	watchDone chan struct{}
}

// DefaultMaxApplyLag is Options.MaxApplyLag's default.
const DefaultMaxApplyLag = 10000

// New builds the server over b.
func New(b *broker.Broker, opts Options) (*Server, error) {
	if opts.MaxApplyLag == 0 {
		opts.MaxApplyLag = DefaultMaxApplyLag
	}
	if b == nil {
		return nil, errors.New("gateway: the broker is nil")
	}
	return newServer(b, opts)
}

func newServer(b backend, opts Options) (*Server, error) {
	if opts.DefaultPartitions == 0 {
		opts.DefaultPartitions = 1
	}
	if opts.DefaultPartitions < 1 || opts.DefaultPartitions > 10000 {
		return nil, fmt.Errorf("gateway: default partitions %d: want 1..10000", opts.DefaultPartitions)
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	auth, err := newAuthenticator(opts.Tokens)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	opts.Tokens = nil // the authenticator holds digests; do not keep secrets around
	s := &Server{
		b:        b,
		opts:     opts,
		log:      opts.Logger,
		auth:     auth,
		metrics:  opts.Metrics,
		gatherer: opts.Gatherer,
		started:  time.Now(),
	}
	if s.gatherer == nil {
		s.gatherer = prometheus.DefaultGatherer
		if s.metrics != nil {
			s.gatherer = s.metrics.gatherer
		}
	}
	if s.metrics != nil {
		s.metrics.attach(b)
	}
	if opts.Offsets != nil {
		s.groups = groups.New(b, opts.Offsets, opts.Logger)
		s.groups.Start()
		if s.metrics != nil {
			s.metrics.groupLag.c.Store(s.groups)
		}
	}
	if s.global, err = newGlobalState(opts.Coordinator, opts.Operations); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if c, ready := opts.Coordinator, opts.Ready; c != nil {
		s.opts.Ready = func(ctx context.Context) error {
			if ready != nil {
				if err := ready(ctx); err != nil {
					return err
				}
			}
			return c.Ping(ctx)
		}
	}
	s.promHandler = newPromHandler(s)
	s.closing, s.stop = context.WithCancel(context.Background())
	if err := s.startCluster(); err != nil {
		s.stop()
		if s.groups != nil {
			s.groups.Close()
		}
		return nil, fmt.Errorf("gateway: %w", err)
	}
	s.router = s.newRouter()
	return s, nil
}

// startCluster sets up cluster mode when Options.Cluster is set: the forwarder and the
// leader watch behind imago_raft_leader_changes_total.
func (s *Server) startCluster() error {
	c := s.opts.Cluster
	if c == nil {
		return nil
	}
	switch s.opts.Forward {
	case "":
		s.opts.Forward = ForwardProxy
	case ForwardProxy, ForwardRedirect:
	default:
		return fmt.Errorf("cluster forward mode %q: want %q or %q", s.opts.Forward, ForwardProxy, ForwardRedirect)
	}
	s.cluster = c
	s.fwd = newForwarder(s, c.Self())
	s.groupsEpoch.sync(s)
	interval := s.opts.LeaderWatchInterval
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	s.watch = newLeaderWatch(c, interval)
	if s.metrics != nil {
		s.metrics.raft.w.Store(s.watch)
	}
	s.watchDone = make(chan struct{})
	go func() {
		defer close(s.watchDone)
		s.watch.run(s.closing)
	}()
	return nil
}

// Handler returns the root handler: the operator console's static files at / and /console/
// (package console), every other request to the API's router.
func (s *Server) Handler() http.Handler { return console.Wrap(s.router) }

// Close makes /readyz answer 503, ends long-poll fetches early (they answer with what they
// have) and detaches the broker from the metrics. Requests in flight otherwise finish. Call
// it before http.Server.Shutdown so that shutdown does not wait out long polls; it does not
// close the broker. It is safe to call more than once.
func (s *Server) Close() {
	if s.closed.Swap(true) {
		return
	}
	s.stop()
	if s.watchDone != nil {
		<-s.watchDone
	}
	if s.fwd != nil {
		s.fwd.close()
	}
	if s.metrics != nil {
		s.metrics.brokerStats.b.Store(nil)
		s.metrics.groupLag.c.Store(nil)
		s.metrics.raft.w.Store(nil)
	}
	if s.groups != nil {
		s.groups.Close() // stops the session sweeper and ends members' long polls
	}
}
