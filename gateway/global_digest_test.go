package gateway

import (
	"net/http"
	"testing"

	"github.com/imagomq/imago/api"
)

// TestGlobalTxIDReusedAfterRestart: the digest of a request's work is kept with its
// transaction's decision records, in every kind of decision log, so after a restart a repeat
// of a client id with other work (another amount) is still 409 idempotency_key_reused and runs
// nothing (no row changed, no message appended), instead of being answered "committed,
// duplicate" for a transfer that never happened; the exact repeat is still the duplicate it is.
func TestGlobalTxIDReusedAfterRestart(t *testing.T) {
	for _, declog := range []string{"", "commitlog", "postgres", "mysql"} {
		name := declog
		if name == "" {
			name = "file"
		}
		t.Run(name, func(t *testing.T) {
			e := startGlobalLog(t, Options{}, declog)
			e.must(http.StatusOK, "POST", "/v1/global-transactions", e.transfer("t-1", 100, "A", "B"))
			want := [4]int64{900, 0, 1000, 100}
			if got := e.balances(); got != want || e.endOffset() != 1 {
				t.Fatalf("after the transfer: balances %v, end offset %d", got, e.endOffset())
			}

			if declog == "postgres" || declog == "mysql" {
				checkDigestColumn(t, e)
			}

			e.restart()
			r := e.must(http.StatusConflict, "POST", "/v1/global-transactions", e.transfer("t-1", 7, "A", "B"))
			if eb := errorBody(t, r); eb.Error.Code != "idempotency_key_reused" || eb.Error.Field != "id" {
				t.Fatalf("id reused for another amount after a restart answered %s", r.body)
			}
			if got := e.balances(); got != want || e.endOffset() != 1 {
				t.Fatalf("the refused repeat ran: balances %v, end offset %d", got, e.endOffset())
			}
			r = e.must(http.StatusOK, "POST", "/v1/global-transactions", e.transfer("t-1", 100, "A", "B"))
			var res api.GlobalTxResult
			decodeJSON(t, r.body, &res)
			if !res.Duplicate || res.Status != "committed" {
				t.Fatalf("exact repeat after a restart answered %s", r.body)
			}
			if got := e.balances(); got != want || e.endOffset() != 1 {
				t.Fatalf("the exact repeat ran: balances %v, end offset %d", got, e.endOffset())
			}
		})
	}
}

// checkDigestColumn: the decision table's readable copy of t-1's digest is its 32 bytes.
func checkDigestColumn(t *testing.T, e *globalEnv) {
	t.Helper()
	q := "SELECT request_digest FROM imago.xa_decisions WHERE node_id = $1 AND client_id = 't-1'"
	db := e.pg
	if e.declog == "mysql" {
		q = "SELECT request_digest FROM imago_xa_decisions WHERE node_id = ? AND client_id = 't-1'"
		db = e.my
	}
	var digest []byte
	if err := db.QueryRow(q, e.coord.NodeID()).Scan(&digest); err != nil {
		t.Fatal(err)
	}
	if len(digest) != 32 {
		t.Fatalf("request_digest of t-1 is %x, want 32 bytes", digest)
	}
}
