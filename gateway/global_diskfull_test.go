package gateway

import (
	"context"
	"database/sql"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/internal/tmpfs"
	"github.com/imagomq/imago/xa"
)

// Global transactions when the decision log cannot be written for lack of space, on a tmpfs
// mounted by the test (internal/tmpfs; root only). Each case commits transfers of 1 (MariaDB
// debit, PostgreSQL credit, one message) until one is not answered 200 committed or /readyz
// turns 503, then frees the space, restarts broker, coordinator and gateway, waits for
// recovery, and checks all or nothing: every transfer answered committed is in both databases
// and in the topic, one answered rolled_back is in none, and the one the disk cut is wholly in
// or wholly out, with a final status that says which.

// diskFullGlobal is one coordinator over MariaDB, PostgreSQL and the broker, restartable.
type diskFullGlobal struct {
	t              *testing.T
	my, pg         *sql.DB
	myDSN, pgDSN   string
	wallet, ledger string
	topic          string
	dataDir        string
	commitLog      bool // the decision log in the broker's commit log
	coord          *xa.Coordinator
	ts             *testServer
	// settled, when set, reports whether the records a committed transfer still writes in the
	// background (its "done") have been written or have failed, so that /readyz tells.
	settled func() bool
	// lazyHold, when set, is the coordinator's LazyRecordDelay.
	lazyHold time.Duration
}

func (e *diskFullGlobal) start() {
	t := e.t
	t.Helper()
	bo := broker.NewOptions(e.dataDir)
	bo.Logger = quietLogger()
	bo.CheckpointInterval = time.Hour // the checkpoint's own disk-full case is TestDiskFull's
	bo.IndexSegmentEntries = 1024     // index files that fit the small tmpfs
	b, err := broker.Open(bo)
	if err != nil {
		t.Fatalf("open broker: %v", err)
	}
	wallet, err := xa.OpenResource("wallet", "mysql", e.myDSN)
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := xa.OpenResource("ledger", "postgres", e.pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	co := xa.NewOptions(filepath.Join(e.dataDir, "coordinator"))
	co.Resources = []xa.Resource{wallet, ledger, xa.Broker("broker", b)}
	co.Logger = quietLogger()
	co.Grace, co.RecoveryInterval = 100*time.Millisecond, 50*time.Millisecond
	if e.commitLog {
		co.DecisionBroker = b
	}
	co.LazyRecordDelay = e.lazyHold
	if e.coord, err = xa.Open(context.Background(), co); err != nil {
		b.Close()
		t.Fatalf("open coordinator: %v", err)
	}
	opts := Options{Coordinator: e.coord, Logger: quietLogger()}
	opts.Operations = mustCompile(t, e.coord, map[string]xa.OperationConfig{
		"wallet.debit": {SQL: "UPDATE " + e.wallet + " SET balance = balance - :amount WHERE id = :account",
			ExpectRows: 1, Params: map[string]string{"account": "string", "amount": "integer min=1"}},
		"ledger.credit": {SQL: "UPDATE " + e.ledger + " SET balance = balance + :amount WHERE id = :account",
			ExpectRows: 1, Params: map[string]string{"account": "string", "amount": "integer min=1"}},
	})
	s, err := New(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.ts = &testServer{t: t, b: b, s: s, opts: opts, hs: httptest.NewServer(s.Handler())}
}

// stop closes gateway, coordinator and broker; the broker may fail to write its last
// checkpoint on the full disk (the restart recovers from the log).
func (e *diskFullGlobal) stop() {
	if e.ts == nil {
		return
	}
	e.ts.s.Close()
	e.ts.hs.Close()
	e.coord.Close() // may fail: its log failed
	e.ts.b.Close()
	e.ts = nil
}

func newDiskFullGlobal(t *testing.T, dataDir string, commitLog bool, opts ...func(*diskFullGlobal)) *diskFullGlobal {
	e := &diskFullGlobal{t: t, myDSN: testenv.MySQLDSN(t), pgDSN: testenv.PostgresDSN(t), dataDir: dataDir, commitLog: commitLog,
		wallet: uniqueName("gdf_w_"), ledger: uniqueName("gdf_l_"), topic: uniqueName("gdf.")}
	for _, o := range opts {
		o(e)
	}
	var err error
	if e.my, err = sql.Open("mysql", e.myDSN); err != nil {
		t.Fatal(err)
	}
	if e.pg, err = sql.Open("pgx", e.pgDSN); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.stop()
		e.my.Exec("DROP TABLE IF EXISTS " + e.wallet)
		e.pg.Exec("DROP TABLE IF EXISTS " + e.ledger)
		e.my.Close()
		e.pg.Close()
	})
	for _, q := range []string{"CREATE TABLE " + e.wallet + " (id VARCHAR(16) PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB",
		"INSERT INTO " + e.wallet + " VALUES ('A', 1000000)"} {
		if _, err := e.my.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{"CREATE TABLE " + e.ledger + " (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)",
		"INSERT INTO " + e.ledger + " VALUES ('B', 0)"} {
		if _, err := e.pg.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	e.start()
	e.ts.createTopic(e.topic, 1)
	return e
}

func (e *diskFullGlobal) transfer(id string) response {
	return e.ts.do(http.MethodPost, "/v1/global-transactions", e.transferBody(id))
}

// committed returns how many transfers the debit, the credit and the topic each hold.
func (e *diskFullGlobal) committed() (debits, credits int64, msgs map[string]bool) {
	e.t.Helper()
	var a int64
	if err := e.my.QueryRow("SELECT balance FROM " + e.wallet + " WHERE id = 'A'").Scan(&a); err != nil {
		e.t.Fatal(err)
	}
	if err := e.pg.QueryRow("SELECT balance FROM " + e.ledger + " WHERE id = 'B'").Scan(&credits); err != nil {
		e.t.Fatal(err)
	}
	msgs = map[string]bool{}
	for off := int64(0); ; {
		res := e.ts.fetch(e.topic, 0, fmt.Sprintf("offset=%d&max_messages=1000", off))
		if len(res.Messages) == 0 {
			break
		}
		for _, m := range res.Messages {
			var v string
			decodeJSON(e.t, m.Value, &v)
			if msgs[v] {
				e.t.Errorf("message %s is in the topic twice", v)
			}
			msgs[v] = true
		}
		off = res.NextOffset
	}
	return 1000000 - a, credits, msgs
}

// decisionFrames returns the kind and length of every record in the file decision log
// (xa/declog_record.go: u32 payload length, u32 CRC, payload whose second byte is the kind).
func decisionFrames(t *testing.T, path string) (kinds []byte, sizes []int) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for len(data) >= 10 {
		n := 8 + int(binary.LittleEndian.Uint32(data))
		if n > len(data) {
			break
		}
		kinds, sizes = append(kinds, data[9]), append(sizes, n)
		data = data[n:]
	}
	return kinds, sizes
}

// runFull commits transfers until one is cut by the full disk; it returns the ids answered
// committed, the one cut and its answer.
func (e *diskFullGlobal) runFull(first int) (acked []string, cut string, last response) {
	t := e.t
	for i := first; i < first+2000; i++ {
		id := fmt.Sprintf("tx-%05d", i)
		r := e.transfer(id)
		if r.status != http.StatusOK {
			return acked, id, r
		}
		var res api.GlobalTxResult
		decodeJSON(t, r.body, &res)
		if res.Status != "committed" {
			t.Fatalf("%s: 200 %s", id, r.body)
		}
		for deadline := time.Now().Add(5 * time.Second); e.settled != nil && !e.settled(); time.Sleep(time.Millisecond) {
			if e.ts.do(http.MethodGet, "/readyz", "").status != http.StatusOK {
				break // its "done" record failed
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: its done record neither written nor failed within 5 s", id)
			}
		}
		if rz := e.ts.do(http.MethodGet, "/readyz", ""); rz.status != http.StatusOK {
			// A record after the commit decision failed: the answer stands.
			return acked, id, r
		}
		acked = append(acked, id)
	}
	t.Fatal("2000 transfers committed on a full disk")
	return nil, "", response{}
}

// checkAfterRestart frees the space, restarts, waits for recovery and checks all or nothing.
func (e *diskFullGlobal) checkAfterRestart(acked []string, cut string, last response, free func()) {
	t := e.t
	t.Helper()
	var res api.GlobalTxResult
	decodeJSON(t, last.body, &res)
	t.Logf("%d committed, then %s: %d %s", len(acked), cut, last.status, strings.TrimSpace(string(last.body)))
	switch {
	case last.status == http.StatusOK && res.Status == "committed":
	case last.status == http.StatusConflict && res.Status == "rolled_back" && res.Error != nil && res.Error.Code == "decision_log_failed":
	case last.status == http.StatusServiceUnavailable && res.Status == "in_doubt" && res.Error != nil && res.Error.Code == "outcome_unknown":
		// Whether the decision is durable is unknown: recovery settles it at the restart.
	default:
		t.Fatalf("%s on a full disk: %d %s; want 200 committed, 409 rolled_back with decision_log_failed, or 503 outcome_unknown", cut, last.status, last.body)
	}
	if rz := e.ts.do(http.MethodGet, "/readyz", ""); rz.status != http.StatusServiceUnavailable {
		t.Errorf("/readyz with the decision log cut by the full disk: %d %s", rz.status, rz.body)
	}
	e.stop()
	free()
	e.start()
	e.ts.must(http.StatusOK, http.MethodGet, "/readyz", "")

	// Recovery settles the cut transaction: committed or rolled back, nothing left prepared.
	var final api.GlobalTx
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := e.ts.do(http.MethodGet, "/v1/global-transactions/"+cut, "")
		if r.status == http.StatusNotFound && res.Status == "rolled_back" {
			// The log holds nothing of it (its "preparing" record was cut and its rollback
			// could not be written): a repeat of its id runs it anew, which is right for a
			// transaction that changed nothing.
			final.Status = "rolled_back"
			break
		}
		if r.status == http.StatusOK {
			decodeJSON(t, r.body, &final)
			if final.Status == "committed" || final.Status == "rolled_back" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after the restart: %d %s", cut, r.status, r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	switch {
	case res.Status == "committed" && final.Status != "committed":
		t.Fatalf("%s was answered committed and is %s after the restart", cut, final.Status)
	case res.Status == "rolled_back" && final.Status != "rolled_back":
		t.Fatalf("%s was answered rolled_back and is %s after the restart", cut, final.Status)
	}
	debits, credits, msgs := e.committed()
	want := int64(len(acked))
	if final.Status == "committed" {
		want++
	}
	if debits != want || credits != want || len(msgs) != int(want) || msgs[cut] != (final.Status == "committed") {
		t.Fatalf("after the restart: %d debits, %d credits, %d messages (the cut one: %v); want %d of each, %s %s",
			debits, credits, len(msgs), msgs[cut], want, cut, final.Status)
	}
	for _, id := range acked {
		if !msgs[id] {
			t.Errorf("committed transfer %s has no message after the restart", id)
		}
	}
	// And it takes transactions again.
	r := e.transfer("after")
	if r.status != http.StatusOK {
		t.Fatalf("a transfer after the restart: %d %s", r.status, r.body)
	}
}

// TestGlobalTxDecisionFileDiskFull: the decision log file (its own tmpfs as the coordinator
// directory, so that it is what runs out of space) is full when a transaction's "preparing"
// record, its commit decision, or its "done" record is written. Each case warms up until the
// log's last page has just less room than that record needs (a tmpfs allocates whole pages),
// then fills the file system.
func TestGlobalTxDecisionFileDiskFull(t *testing.T) {
	for _, c := range []struct {
		name string
		kind byte // the record that does not fit: 1 preparing, 2 commit, 4 done
	}{{"preparing", 1}, {"commit decision", 2}, {"done", 4}} {
		t.Run(c.name, func(t *testing.T) {
			dataDir := t.TempDir()
			coordDir := filepath.Join(dataDir, "coordinator")
			if err := os.MkdirAll(coordDir, 0o755); err != nil {
				t.Fatal(err)
			}
			mnt := tmpfs.Mount(t, "1m")
			if err := os.Remove(coordDir); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(mnt, coordDir); err != nil {
				t.Fatal(err)
			}
			e := newDiskFullGlobal(t, dataDir, false)
			logPath := filepath.Join(coordDir, "decisions.log")
			// Warm up: one transfer gives the sizes of its three records, then more until the
			// room left in the last page is in [before, before+size) of the record cut.
			var acked []string
			i := 0
			settled := func() []int {
				for {
					kinds, sizes := decisionFrames(t, logPath)
					if len(kinds) == 3*len(acked) && (len(kinds) == 0 || kinds[len(kinds)-1] == 4) {
						return sizes
					}
					time.Sleep(time.Millisecond)
				}
			}
			commit := func() {
				id := fmt.Sprintf("tx-%05d", i)
				i++
				e.ts.must(http.StatusOK, http.MethodPost, "/v1/global-transactions", e.transferBody(id))
				acked = append(acked, id)
			}
			commit()
			sizes := settled()
			before := map[byte]int{1: 0, 2: sizes[0], 4: sizes[0] + sizes[1]}[c.kind]
			need := map[byte]int{1: sizes[0], 2: sizes[1], 4: sizes[2]}[c.kind]
			for {
				size := 0
				for _, n := range settled() {
					size += n
				}
				room := (4096 - size%4096) % 4096
				if room > before && room < before+need {
					break
				}
				if len(acked) > 200 {
					t.Fatal("no warm-up leaves the room wanted")
				}
				commit()
			}
			// A committed transfer's "done" record is written after the answer: runFull waits
			// for it (or for its failure) before it looks at /readyz.
			e.settled = func() bool {
				kinds, _ := decisionFrames(t, logPath)
				return len(kinds)%3 == 0 && len(kinds) > 0 && kinds[len(kinds)-1] == 4
			}
			free := tmpfs.Fill(t, mnt, 0)
			more, cut, last := e.runFull(i)
			if len(more) != 0 {
				t.Fatalf("%d more transfers committed before one was cut", len(more))
			}
			if kinds, _ := decisionFrames(t, logPath); c.kind == 4 && (len(kinds) == 0 || kinds[len(kinds)-1] != 2) {
				t.Fatalf("the done record was to be cut; the log ends with kinds %v", kinds[max(0, len(kinds)-3):])
			}
			e.checkAfterRestart(acked, cut, last, free)
		})
	}
}

func (e *diskFullGlobal) transferBody(id string) string {
	return fmt.Sprintf(`{"id": %q, "timeout_ms": 10000, "steps": [
		{"resource": "wallet", "operation": "debit", "params": {"account": "A", "amount": 1}},
		{"resource": "ledger", "operation": "credit", "params": {"account": "B", "amount": 1}}],
		"messages": [{"topic": %q, "value": %q}]}`, id, e.topic, id)
}

// TestGlobalTxDecisionCommitLogDiskFull: with the decisions in the broker's commit log
// (coordinator.decision_log: commitlog), the disk fills under the transfers; the batch cut is
// the one holding a transaction's commit decision with its message, or a later one holding
// "done" records.
func TestGlobalTxDecisionCommitLogDiskFull(t *testing.T) {
	mnt := tmpfs.Mount(t, "2m")
	e := newDiskFullGlobal(t, filepath.Join(mnt, "data"), true)
	e.ts.must(http.StatusOK, http.MethodPost, "/v1/global-transactions", e.transferBody("tx-00000"))
	free := tmpfs.Fill(t, mnt, 0)
	acked, cut, last := e.runFull(1)
	e.checkAfterRestart(append([]string{"tx-00000"}, acked...), cut, last, free)
}
