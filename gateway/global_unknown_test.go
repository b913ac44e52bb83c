package gateway

import (
	"net/http"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/internal/fsutil"
)

// TestGlobalTxDecisionUnknownIsOutcomeUnknown: when whether a transaction's commit decision is
// durable is unknown, the answer is 503 outcome_unknown (as for a produce, and as in a cluster
// whose leader lost its leadership after proposing the decision), not 409 in_doubt, which tells
// an operator to look at a heuristic hazard; a repeat of the id says the same until recovery
// has settled it, and after the restart a repeat answers the outcome once, all or nothing.
//
// The fault is a disk whose every fsync fails while writes still land (through the fsync seam:
// a real failing disk cannot be had on demand), with the decisions in the commit log: the
// decision's batch is neither known durable nor cut, so the broker answers outcome unknown.
// The first failing fsync must be the decision's: the records nobody waits for (tx-00000's
// "done", tx-00001's "preparing") are held for an hour, not 20ms, or on a loaded machine one of
// them hit the failing disk first and tx-00001 was (rightly) rolled back before its decision.
func TestGlobalTxDecisionUnknownIsOutcomeUnknown(t *testing.T) {
	e := newDiskFullGlobal(t, filepath.Join(t.TempDir(), "data"), true, func(e *diskFullGlobal) { e.lazyHold = time.Hour })
	e.ts.must(http.StatusOK, http.MethodPost, "/v1/global-transactions", e.transferBody("tx-00000"))
	var failing atomic.Bool
	failing.Store(true)
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if failing.Load() && ev.Kind == fsutil.File {
			return syscall.EIO
		}
		return do()
	})
	defer restore()
	for attempt := 0; attempt < 2; attempt++ { // the first run, then a repeat of the id
		r := e.transfer("tx-00001")
		var res api.GlobalTxResult
		decodeJSON(t, r.body, &res)
		if r.status != http.StatusServiceUnavailable || res.Error == nil || res.Error.Code != api.CodeOutcomeUnknown || res.ID != "tx-00001" {
			// Errorf, not Fatalf: the restart below must still settle the prepared branches,
			// or the tables' clean-up waits on their locks.
			t.Errorf("attempt %d with the decision's durability unknown: %d %s; want 503 outcome_unknown naming the id", attempt, r.status, r.body)
		}
	}
	failing.Store(false)
	e.stop()
	e.start()
	var final api.GlobalTxResult
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := e.transfer("tx-00001")
		decodeJSON(t, r.body, &final)
		if r.status == http.StatusOK && final.Status == "committed" || r.status == http.StatusConflict && final.Status == "rolled_back" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a repeat of tx-00001 after the restart: %d %s", r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	debits, credits, msgs := e.committed()
	want := int64(1)
	if final.Status == "committed" {
		want = 2
	}
	if debits != want || credits != want || int64(len(msgs)) != want || !msgs["tx-00000"] || msgs["tx-00001"] != (final.Status == "committed") {
		t.Fatalf("after the restart tx-00001 is %s, and the books hold %d debits, %d credits, messages %v; want %d of each",
			final.Status, debits, credits, msgs, want)
	}
}
