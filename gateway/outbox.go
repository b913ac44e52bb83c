package gateway

import (
	"net/http"

	"github.com/imagomq/imago/outbox"
)

// OutboxSource is one transactional outbox source as GET /v1/outbox/sources reports it: the
// relay's own status.
type OutboxSource = outbox.Status

// OutboxStatus reports the outbox relay sources this process runs (Options.Outbox).
type OutboxStatus interface {
	OutboxSources() []OutboxSource
}

type outboxSourceJSON struct {
	Name          string  `json:"name"`
	Active        bool    `json:"active"`
	Backlog       *int64  `json:"backlog"`
	RelayedTotal  int64   `json:"relayed_total"`
	LastRelayedAt *string `json:"last_relayed_at"`
	LagMS         int64   `json:"lag_ms"`
	LastError     string  `json:"last_error,omitempty"`
}

// handleOutboxSources answers GET /v1/outbox/sources.
func (s *Server) handleOutboxSources(w http.ResponseWriter, r *http.Request) error {
	out := []outboxSourceJSON{}
	if s.opts.Outbox != nil {
		for _, src := range s.opts.Outbox.OutboxSources() {
			j := outboxSourceJSON{Name: src.Name, Active: src.Active, RelayedTotal: src.RelayedTotal,
				LagMS: src.Lag.Milliseconds(), LastError: src.LastError, LastRelayedAt: optTime(src.LastRelayedAt)}
			if src.Backlog >= 0 {
				b := src.Backlog
				j.Backlog = &b
			}
			out = append(out, j)
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"sources": out})
}
