// Package gateway is Imago's HTTP/JSON door (shared/API.md): routes, auth, error mapping,
// long-poll fetch and metrics, over one *broker.Broker.
package gateway

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/prometheus/client_golang/prometheus"
)

// Token is one bearer token and its rights. Produce and Consume hold topic patterns
// (path.Match syntax, e.g. "settlement.*"); Admin allows topic creation and admin endpoints.
type Token struct {
	Name    string
	Token   string
	Produce []string
	Consume []string
	Admin   bool
}

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
}

// Metrics holds the Prometheus collectors. It implements broker.Observer, so it is created
// before the broker is opened and handed to both.
type Metrics struct { /* collectors */
}

// NewMetrics registers Imago's collectors on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics { panic("todo") }

// Flushed implements broker.Observer.
func (m *Metrics) Flushed(broker.FlushStats) {}

// Server is the HTTP door.
type Server struct{}

// New builds the server over b.
func New(b *broker.Broker, opts Options) (*Server, error) { panic("todo") }

// Handler returns the root handler (chi router with middleware).
func (s *Server) Handler() http.Handler { panic("todo") }
