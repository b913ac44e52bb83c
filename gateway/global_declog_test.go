package gateway

import (
	"encoding/hex"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/internal/fsutil"
	"github.com/imagomq/imago/xa"
)

// TestGlobalTxReadyzDecisionLogFailed: once the coordinator's decision log has failed (its
// fsync answers EIO, through internal/fsutil's seam), /readyz answers 503 and no global
// transaction prepares: the next one is 409 rolled_back with the code decision_log_failed,
// and nothing of it changed anywhere. (The transaction whose decision hit the failed fsync is
// in_doubt, answered 503 outcome_unknown: whether its decision reached the disk is unknown
// until a restart.)
func TestGlobalTxReadyzDecisionLogFailed(t *testing.T) {
	e := startGlobal(t, Options{})
	// Accounts of their own for the second transfer: the first one's rows stay locked.
	if _, err := e.my.Exec("INSERT INTO " + e.wallet + " VALUES ('C', 100)"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pg.Exec("INSERT INTO " + e.ledger + " VALUES ('D', 0)"); err != nil {
		t.Fatal(err)
	}
	e.must(http.StatusOK, "GET", "/readyz", "")
	coordDir := e.dir + "/coordinator"
	restore := fsutil.SetHook(func(ev fsutil.Event, do func() error) error {
		if ev.Kind == fsutil.File && strings.HasPrefix(ev.Path, coordDir) {
			return syscall.EIO
		}
		return do()
	})
	defer restore()

	r := e.do("POST", "/v1/global-transactions", e.transfer("first", 10, "A", "B"))
	var res api.GlobalTxResult
	decodeJSON(t, r.body, &res)
	if r.status != http.StatusServiceUnavailable || res.Status != "in_doubt" || res.Error == nil || res.Error.Code != api.CodeOutcomeUnknown {
		t.Fatalf("the transaction whose decision fsync failed: %d %s", r.status, r.body)
	}
	// Its branches stay prepared until an operator or a restart acts; free them at the end.
	in, err := e.coord.Get("first")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, b := range in.Branches {
			switch b.Resource {
			case "wallet":
				e.my.Exec("XA ROLLBACK X'" + hex.EncodeToString(b.Xid.Gtrid) + "',X'" + hex.EncodeToString(b.Xid.Bqual) + "',1229801265")
			case "ledger":
				e.pg.Exec("ROLLBACK PREPARED '494d4731_" + string(b.Xid.Gtrid) + "_" + hex.EncodeToString(b.Xid.Bqual) + "'")
			}
		}
	})

	r = e.do("GET", "/readyz", "")
	if r.status != http.StatusServiceUnavailable || errorBody(t, r).Error.Code != "not_ready" || !strings.Contains(string(r.body), "decision log") {
		t.Fatalf("readyz with a failed decision log: %d %s", r.status, r.body)
	}
	r = e.must(http.StatusConflict, "POST", "/v1/global-transactions", e.transfer("second", 10, "C", "D"))
	decodeJSON(t, r.body, &res)
	if res.Status != "rolled_back" || res.Error == nil || res.Error.Code != "decision_log_failed" {
		t.Fatalf("a transaction with a failed decision log: %s", r.body)
	}
	second, err := e.coord.Get("second")
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range second.Branches {
		if b.State == xa.BranchPrepared {
			t.Errorf("branch %s prepared with a failed decision log", b.Resource)
		}
	}
	var c, d int64
	if err := e.my.QueryRow("SELECT balance FROM " + e.wallet + " WHERE id = 'C'").Scan(&c); err != nil {
		t.Fatal(err)
	}
	if err := e.pg.QueryRow("SELECT balance FROM " + e.ledger + " WHERE id = 'D'").Scan(&d); err != nil {
		t.Fatal(err)
	}
	if c != 100 || d != 0 {
		t.Fatalf("wallet C = %d, ledger D = %d; want 100 and 0 (nothing changed)", c, d)
	}
}
