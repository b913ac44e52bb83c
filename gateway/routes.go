package gateway

import (
	"fmt"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/imagomq/imago/api"
)

// handlerFunc is a route handler; a returned error is written by writeError.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// route is one entry of the routing table.
type route struct {
	method  string
	pattern string
	need    right
	h       handlerFunc
}

// routes is every endpoint the gateway serves, with the token right it needs when auth is
// on. api/openapi.yaml describes exactly these (TestOpenAPIMatchesRouter keeps them in step).
func (s *Server) routes() []route {
	return []route{
		{http.MethodGet, "/healthz", rightNone, s.handleHealthz},
		{http.MethodGet, "/readyz", rightNone, s.handleReadyz},
		{http.MethodGet, "/metrics", rightNone, s.handleMetrics},
		{http.MethodGet, "/openapi.yaml", rightNone, s.handleOpenAPI},
		{http.MethodGet, "/v1/stats", rightAny, s.handleStats},
		{http.MethodGet, "/v1/cluster", rightAny, s.handleCluster},
		{http.MethodPost, "/v1/cluster/members", rightAdmin, s.handleAddMember},
		{http.MethodDelete, "/v1/cluster/members/{id}", rightAdmin, s.handleRemoveMember},
		{http.MethodPost, "/v1/cluster/leader", rightAdmin, s.handleTransferLeader},
		{http.MethodGet, "/v1/whoami", rightAny, s.handleWhoAmI},
		{http.MethodGet, "/v1/outbox/sources", rightAny, s.handleOutboxSources},
		{http.MethodGet, "/v1/topics", rightAny, s.handleListTopics},
		{http.MethodPut, "/v1/topics/{topic}", rightAdmin, s.handleCreateTopic},
		{http.MethodGet, "/v1/topics/{topic}", rightDescribe, s.handleDescribeTopic},
		{http.MethodPost, "/v1/topics/{topic}/messages", rightProduce, s.handleProduce},
		{http.MethodGet, "/v1/topics/{topic}/partitions/{partition}/messages", rightConsume, s.handleFetch},
		// Transactions (tx.go, xa.go): /messages also checks the produce right on each topic.
		{http.MethodPost, "/v1/transactions", rightProducer, s.handleBeginTx},
		{http.MethodGet, "/v1/transactions/{id}", rightProducer, s.handleTxStatus},
		{http.MethodPost, "/v1/transactions/{id}/messages", rightProducer, s.handleTxMessages},
		{http.MethodPost, "/v1/transactions/{id}/commit", rightProducer, s.handleCommitTx},
		{http.MethodPost, "/v1/transactions/{id}/rollback", rightProducer, s.handleRollbackTx},
		{http.MethodPost, "/v1/xa/start", rightProducer, s.handleXAStart},
		{http.MethodPost, "/v1/xa/messages", rightProducer, s.handleXAMessages},
		{http.MethodPost, "/v1/xa/end", rightProducer, s.handleXAEnd},
		{http.MethodPost, "/v1/xa/prepare", rightProducer, s.handleXAPrepare},
		{http.MethodPost, "/v1/xa/commit", rightProducer, s.handleXACommit},
		{http.MethodPost, "/v1/xa/rollback", rightProducer, s.handleXARollback},
		{http.MethodPost, "/v1/xa/forget", rightProducer, s.handleXAForget},
		{http.MethodGet, "/v1/xa/recover", rightProducer, s.handleXARecover},
		{http.MethodPost, "/v1/xa/heuristic", rightAdmin, s.handleXAHeuristic},
		// Consumer groups (groups_http.go): each handler checks consume on the topics involved.
		{http.MethodGet, "/v1/groups", rightAny, s.handleListGroups},
		{http.MethodPost, "/v1/groups/{group}/members", rightAny, s.handleJoinGroup},
		{http.MethodGet, "/v1/groups/{group}/members/{member}/messages", rightAny, s.handlePollGroup},
		{http.MethodDelete, "/v1/groups/{group}/members/{member}", rightAny, s.handleLeaveGroup},
		{http.MethodPost, "/v1/groups/{group}/offsets", rightAny, s.handleCommitOffsets},
		{http.MethodGet, "/v1/groups/{group}/offsets", rightAny, s.handleGroupOffsets},
		// Global transactions (global.go): POST also checks the produce right on each message's topic.
		{http.MethodPost, "/v1/global-transactions", rightProducer, s.handleGlobalTx},
		// Reading them needs any valid token, so an on-call reader (the console) sees what is in doubt.
		{http.MethodGet, "/v1/global-transactions", rightAny, s.handleListGlobalTx},
		{http.MethodGet, "/v1/global-transactions/{id}", rightAny, s.handleGetGlobalTx},
		{http.MethodPost, "/v1/global-transactions/{id}/resolve", rightAdmin, s.handleResolveGlobalTx},
	}
}

func (s *Server) newRouter() *chi.Mux {
	r := chi.NewRouter()
	for _, rt := range s.routes() {
		r.Method(rt.method, rt.pattern, s.wrap(rt.pattern, rt.need, rt.h))
	}
	r.NotFound(s.wrap("unmatched", rightNone, func(w http.ResponseWriter, req *http.Request) error {
		return newError(http.StatusNotFound, api.CodeNotFound, "no endpoint at %s; GET /openapi.yaml lists them", req.URL.Path)
	}))
	r.MethodNotAllowed(s.wrap("unmatched", rightNone, func(w http.ResponseWriter, req *http.Request) error {
		allowed := s.allowedMethods(req.URL.Path)
		if len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
		}
		return newError(http.StatusMethodNotAllowed, api.CodeMethodNotAllowed, "%s is not allowed on %s; use %s",
			req.Method, req.URL.Path, strings.Join(allowed, " or "))
	}))
	return r
}

func (s *Server) allowedMethods(path string) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodPost, http.MethodDelete, http.MethodPatch} {
		if s.router.Match(chi.NewRouteContext(), m, path) {
			out = append(out, m)
		}
	}
	return out
}

// wrap is the whole middleware stack of one route, kept in one function so a request pays
// for one closure: panic recovery, metrics (collectors resolved once here, not per request),
// auth, in cluster mode the forward to the leader (cluster.go), the handler, and error writing.
func (s *Server) wrap(pattern string, need right, h handlerFunc) http.HandlerFunc {
	rm := s.metrics.route(pattern)
	kind := clusterRouteKind(pattern)
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := getRecorder(w)
		if s.metrics != nil {
			s.metrics.inFlight.Inc()
		}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler { // net/http's way to abort a response: pass it on
					if s.metrics != nil {
						s.metrics.inFlight.Dec()
					}
					panic(p)
				}
				s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if !rw.wroteHeader {
					s.writeError(rw, r, fmt.Errorf("panic: %v", p))
				}
			}
			if s.metrics != nil {
				s.metrics.inFlight.Dec()
			}
			in := r.ContentLength
			if rw.bodyRead > 0 {
				in = rw.bodyRead
			}
			rm.observe(rw.status, time.Since(start), in, rw.written)
			putRecorder(rw)
		}()
		if s.cluster != nil {
			s.setLeaderHeader(rw)
		}
		t, err := s.authorize(r, need)
		rw.token = t
		if err == nil && s.cluster != nil && kind != routeLocal {
			var done bool
			if done, err = s.clusterGate(rw, r, kind); done {
				return
			}
		}
		if err == nil {
			err = h(rw, r)
		}
		if err != nil {
			if rw.wroteHeader {
				s.log.Warn("error after response started", "method", r.Method, "path", r.URL.Path, "err", err)
				return
			}
			s.writeError(rw, r, err)
		}
	}
}

// recorder wraps the ResponseWriter to learn the status and body size for metrics.
type recorder struct {
	http.ResponseWriter
	status      int
	written     int64
	bodyRead    int64      // set by readBody
	token       *authToken // set by wrap from authorize; read by callerToken
	wroteHeader bool
}

var recorderPool = sync.Pool{New: func() any { return new(recorder) }}

func getRecorder(w http.ResponseWriter) *recorder {
	rw := recorderPool.Get().(*recorder)
	*rw = recorder{ResponseWriter: w, status: http.StatusOK}
	return rw
}

func putRecorder(rw *recorder) {
	*rw = recorder{}
	recorderPool.Put(rw)
}

func (rw *recorder) WriteHeader(code int) {
	if !rw.wroteHeader {
		rw.status = code
		rw.wroteHeader = true
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(b []byte) (int, error) {
	rw.wroteHeader = true
	n, err := rw.ResponseWriter.Write(b)
	rw.written += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// Flush passes through, for streaming handlers such as promhttp.
func (rw *recorder) Flush() {
	rw.wroteHeader = true
	if f, ok := rw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
