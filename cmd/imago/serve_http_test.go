package main

import (
	"log/slog"
	"net/http"
	"testing"

	"github.com/imagomq/imago/gateway"
	"github.com/imagomq/imago/internal/config"
	"github.com/imagomq/imago/xa"
)

// The HTTP write timeout must outlast the longest request the API allows: a global
// transaction with the largest timeout_ms decides at its deadline and may then spend a phase
// timeout committing or rolling back. A shorter write timeout closes the connection before the
// answer, and the client cannot tell what happened.
func TestHTTPWriteTimeoutOutlastsLongestTransaction(t *testing.T) {
	cfg := config.Default()
	srv := newHTTPServer(cfg, http.NotFoundHandler(), slog.Default())
	need := gateway.MaxTimeout + 2*xa.NewOptions("").PhaseTimeout
	if srv.WriteTimeout <= need {
		t.Fatalf("write timeout %s, want more than %s (timeout_ms up to %s, then two phase timeouts)", srv.WriteTimeout, need, gateway.MaxTimeout)
	}
	if srv.WriteTimeout <= cfg.HTTP.MaxWait {
		t.Fatalf("write timeout %s, want more than the long-poll wait %s", srv.WriteTimeout, cfg.HTTP.MaxWait)
	}
}
