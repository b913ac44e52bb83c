package gateway

import (
	"net/http"
	"time"
)

// OutboxSource is one transactional outbox source as GET /v1/outbox/sources reports it.
type OutboxSource struct {
	Name string
	// Active is true while this process holds the source's lock and relays it.
	Active bool
	// Backlog is rows waiting in the outbox table; negative when not sampled yet.
	Backlog int64
	// RelayedTotal counts rows the source has published (kept in the database, across relays).
	RelayedTotal int64
	// LastRelayedAt is when the last batch was published; zero when never.
	LastRelayedAt time.Time
	// Lag is the commit-to-publish delay of the last batch's oldest row.
	Lag time.Duration
	// LastError is the last failure, empty after a success.
	LastError string
}

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
				LagMS: src.Lag.Milliseconds(), LastError: src.LastError}
			if src.Backlog >= 0 {
				b := src.Backlog
				j.Backlog = &b
			}
			if !src.LastRelayedAt.IsZero() {
				t := src.LastRelayedAt.UTC().Format("2006-01-02T15:04:05.000Z07:00")
				j.LastRelayedAt = &t
			}
			out = append(out, j)
		}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"sources": out})
}
