package gateway

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/imagomq/imago/broker"
)

// TestOutcomeUnknownIsNotPlainUnavailable: a failed write whose outcome is unknown must not be
// answered like a shutdown (retry anywhere): the client may retry only with the same key.
func TestOutcomeUnknownIsNotPlainUnavailable(t *testing.T) {
	err := fmt.Errorf("%w: %w", broker.ErrOutcomeUnknown, fmt.Errorf("%w: storage failed", broker.ErrClosed))
	ae := errorFor(err)
	if ae.status != http.StatusServiceUnavailable || ae.code != "outcome_unknown" {
		t.Fatalf("errorFor(outcome unknown) = %d %s", ae.status, ae.code)
	}
}

func TestStorageFailedIsNotShuttingDown(t *testing.T) {
	err := fmt.Errorf("%w: %w, restart required: disk full", broker.ErrClosed, broker.ErrStorage)
	if ae := errorFor(err); ae.status != http.StatusServiceUnavailable || ae.code != "storage_failed" {
		t.Fatalf("errorFor(storage failed) = %d %s", ae.status, ae.code)
	}
}
