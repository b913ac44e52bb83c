package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// This file holds the health and introspection endpoints an operator's tooling polls:
// /healthz (the process answers), /readyz (it can take traffic), /metrics, /openapi.yaml
// and /v1/stats.

// writeJSON writes v with encoding/json (for the endpoints that are not hot paths).
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b) // an error means the client went away: nothing left to tell it
	return nil
}

// handleHealthz answers 200 while the process serves HTTP.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, api.Status{Status: "ok"})
}

// handleReadyz answers 200 when the broker is open, the offset store takes commits (and, for a
// store that can tell, ZooKeeper's or a database's, can be reached now), the
// coordinator's decision log has not failed and every configured resource answers
// (Options.Ready, then the coordinator's Ping), 503 not_ready otherwise (and from the moment
// Close is called).
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) error {
	if s.closed.Load() {
		return newError(http.StatusServiceUnavailable, api.CodeNotReady, "the server is shutting down")
	}
	if err := s.b.Err(); err != nil {
		return newError(http.StatusServiceUnavailable, api.CodeNotReady, "storage refuses writes until the server is restarted: %v", err)
	}
	if o, ok := s.opts.Offsets.(interface{ Err() error }); ok {
		if err := o.Err(); err != nil {
			return newError(http.StatusServiceUnavailable, api.CodeNotReady, "the offset store refuses commits until the server is restarted: %v", err)
		}
	}
	if o, ok := s.opts.Offsets.(interface{ Ping(context.Context) error }); ok {
		if err := o.Ping(r.Context()); err != nil {
			return newError(http.StatusServiceUnavailable, api.CodeNotReady,
				"the offset store is unreachable (offset commits answer 503 offset_store_unavailable until it is back): %v", err)
		}
	}
	if s.cluster != nil {
		if err := s.clusterReady(); err != nil {
			return err
		}
	}
	if s.opts.Ready != nil {
		if err := s.opts.Ready(r.Context()); err != nil {
			return newError(http.StatusServiceUnavailable, api.CodeNotReady, "not ready: %v", err)
		}
	}
	return writeJSON(w, http.StatusOK, api.Status{Status: "ready"})
}

func newPromHandler(s *Server) http.Handler {
	return promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// handleMetrics serves the Prometheus text format.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	s.promHandler.ServeHTTP(w, r)
	return nil
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", "application/yaml")
	h.Set("Content-Length", strconv.Itoa(len(api.Spec)))
	w.WriteHeader(http.StatusOK)
	w.Write(api.Spec)
	return nil
}

// handleStats answers GET /v1/stats: broker.Stats with snake_case fields.
func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) error {
	st := s.b.Stats()
	return writeJSON(w, http.StatusOK, api.Stats{
		Version:         s.opts.Version,
		UptimeSeconds:   time.Since(s.started).Seconds(),
		Topics:          st.Topics,
		Partitions:      st.Partitions,
		MessagesIn:      st.MessagesIn,
		BytesIn:         st.BytesIn,
		MessagesOut:     st.MessagesOut,
		BytesOut:        st.BytesOut,
		Fsyncs:          st.Fsyncs,
		LogBytes:        st.LogBytes,
		PendingBytes:    st.PendingBytes,
		RecoveredBytes:  st.RecoveredBytes,
		TruncatedBytes:  st.TruncatedBytes,
		OpenDurationMS:  float64(st.OpenDuration) / float64(time.Millisecond),
		IdempotencyKeys: st.IdempotencyKeys,
	})
}
