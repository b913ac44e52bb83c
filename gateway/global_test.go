package gateway

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/imagomq/imago/api"
	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/testenv"
	"github.com/imagomq/imago/xa"
)

// globalEnv is a gateway with a real coordinator over real MariaDB (resource "wallet") and
// PostgreSQL (resource "ledger") databases, with tables of its own.
type globalEnv struct {
	*testServer
	my, pg         *sql.DB
	myDSN, pgDSN   string
	wallet, ledger string // table names
	topic          string
	coord          *xa.Coordinator
	extra          Options
	declog         string // the coordinator's decision log (startGlobalLog)
}

func startGlobal(t *testing.T, extra Options) *globalEnv {
	t.Helper()
	return startGlobalLog(t, extra, "")
}

// startGlobalLog is startGlobal with the coordinator's decision log in declog: "" (the file,
// the default), "commitlog" (the broker's commit log), "mysql" or "postgres" (the table in the
// wallet's or the ledger's database; the test deletes its coordinator's rows at the end).
func startGlobalLog(t *testing.T, extra Options, declog string) *globalEnv {
	t.Helper()
	ctx := context.Background()
	e := &globalEnv{myDSN: testenv.MySQLDSN(t), pgDSN: testenv.PostgresDSN(t), extra: extra, declog: declog,
		wallet: uniqueName("gwg_w_"), ledger: uniqueName("gwg_l_"), topic: uniqueName("gwg.")}
	var err error
	if e.my, err = sql.Open("mysql", e.myDSN); err != nil {
		t.Fatal(err)
	}
	if e.pg, err = sql.Open("pgx", e.pgDSN); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		e.my.Exec("DROP TABLE IF EXISTS " + e.wallet)
		e.pg.Exec("DROP TABLE IF EXISTS " + e.ledger)
		e.my.Close()
		e.pg.Close()
	})
	for _, q := range []string{"CREATE TABLE " + e.wallet + " (id VARCHAR(16) PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB",
		"INSERT INTO " + e.wallet + " VALUES ('A', 1000), ('B', 0)"} {
		if _, err := e.my.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{"CREATE TABLE " + e.ledger + " (id TEXT PRIMARY KEY, balance BIGINT NOT NULL)",
		"INSERT INTO " + e.ledger + " VALUES ('A', 1000), ('B', 0)"} {
		if _, err := e.pg.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	e.testServer = &testServer{t: t, dir: t.TempDir()}
	e.up()
	e.createTopic(e.topic, 1)
	return e
}

// up opens the broker, the coordinator and the gateway on e.dir: at the start, and again at
// each restart. Each closes with the test (closing one earlier is fine).
func (e *globalEnv) up() {
	t := e.t.(*testing.T)
	t.Helper()
	dir := e.dir
	b := openBroker(t, dir)
	wallet, err := xa.OpenResource("wallet", "mysql", e.myDSN)
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := xa.OpenResource("ledger", "postgres", e.pgDSN)
	if err != nil {
		t.Fatal(err)
	}
	co := xa.NewOptions(dir + "/coordinator")
	co.Resources = []xa.Resource{wallet, ledger, xa.Broker("broker", b)}
	co.Logger = quietLogger()
	switch e.declog {
	case "":
	case "commitlog":
		co.DecisionBroker = b
	case "mysql":
		co.DecisionDB, co.DecisionDialect = e.my, "mysql"
	case "postgres":
		co.DecisionDB, co.DecisionDialect = e.pg, "postgres"
	default:
		t.Fatalf("decision log %q", e.declog)
	}
	c, err := xa.Open(context.Background(), co)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close coordinator: %v", err)
		}
	})
	if e.coord == nil && co.DecisionDB != nil {
		table, ph := "imago.xa_decisions", "$1"
		if e.declog == "mysql" {
			table, ph = "imago_xa_decisions", "?"
		}
		db, node := co.DecisionDB, c.NodeID()
		t.Cleanup(func() { db.Exec("DELETE FROM "+table+" WHERE node_id = "+ph, node) })
	}
	e.coord = c
	opts := e.extra
	opts.Coordinator = c
	opts.Logger = quietLogger()
	if opts.Operations == nil {
		opts.Operations = mustCompile(t, c, map[string]xa.OperationConfig{
			"wallet.debit": {SQL: "UPDATE " + e.wallet + " SET balance = balance - :amount WHERE id = :account AND balance >= :amount",
				ExpectRows: 1, Params: map[string]string{"account": "string max_length=16", "amount": "integer min=1"}},
			"wallet.credit": {SQL: "UPDATE " + e.wallet + " SET balance = balance + :amount WHERE id = :account",
				ExpectRows: 1, Params: map[string]string{"account": "string", "amount": "integer min=1"}},
			"ledger.credit": {SQL: "UPDATE " + e.ledger + " SET balance = balance + :amount WHERE id = :account",
				ExpectRows: 1, Params: map[string]string{"account": "string", "amount": "integer min=1"}},
			"ledger.debit": {SQL: "UPDATE " + e.ledger + " SET balance = balance - :amount WHERE id = :account AND balance >= :amount",
				ExpectRows: 1, Params: map[string]string{"account": "string", "amount": "integer min=1"}},
		})
	}
	reg := prometheus.NewRegistry()
	opts.Metrics = NewMetrics(reg)
	e.testServer = serve(t, b, opts)
	e.dir, e.reg = dir, reg
}

// restart stops the gateway, the coordinator and the broker, and opens them again on the same
// directory and databases, as a restart of the process does: what the coordinator knows of
// earlier transactions then comes from its decision log only.
func (e *globalEnv) restart() {
	e.t.Helper()
	e.s.Close()
	e.hs.Close()
	if err := e.coord.Close(); err != nil {
		e.t.Fatalf("close coordinator: %v", err)
	}
	if err := e.b.Close(); err != nil {
		e.t.Fatalf("close broker: %v", err)
	}
	e.up()
}

// openBroker opens a broker under dir/log; it closes with the test, after what was opened
// over it.
func openBroker(t *testing.T, dir string) *broker.Broker {
	t.Helper()
	bo := broker.NewOptions(dir + "/log")
	bo.Logger = quietLogger()
	b, err := broker.Open(bo)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// openCoordinator opens a coordinator under dir/coordinator over resources; it closes with
// the test.
func openCoordinator(t *testing.T, dir string, resources ...xa.Resource) *xa.Coordinator {
	t.Helper()
	co := xa.NewOptions(dir + "/coordinator")
	co.Resources = resources
	co.Logger = quietLogger()
	c, err := xa.Open(context.Background(), co)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close coordinator: %v", err)
		}
	})
	return c
}

// serve builds a gateway over b and serves it; both stop with the test (before the broker
// and coordinator it runs over).
func serve(t *testing.T, b *broker.Broker, opts Options) *testServer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	s, err := New(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{t: t, b: b, s: s, opts: opts, hs: httptest.NewServer(s.Handler())}
	t.Cleanup(func() {
		s.Close()
		ts.hs.Close()
	})
	return ts
}

// balances returns A and B in the wallet (MariaDB) and the ledger (PostgreSQL).
func (e *globalEnv) balances() [4]int64 {
	e.t.Helper()
	var out [4]int64
	for i, q := range []struct {
		db  *sql.DB
		sql string
	}{
		{e.my, "SELECT balance FROM " + e.wallet + " WHERE id = 'A'"}, {e.my, "SELECT balance FROM " + e.wallet + " WHERE id = 'B'"},
		{e.pg, "SELECT balance FROM " + e.ledger + " WHERE id = 'A'"}, {e.pg, "SELECT balance FROM " + e.ledger + " WHERE id = 'B'"},
	} {
		if err := q.db.QueryRow(q.sql).Scan(&out[i]); err != nil {
			e.t.Fatal(err)
		}
	}
	return out
}

func (e *globalEnv) endOffset() int64 {
	e.t.Helper()
	info, err := e.b.Topic(e.topic)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.Partitions[0].EndOffset
}

func (e *globalEnv) transfer(id string, amount any, from, to string) string {
	var idField string
	if id != "" {
		idField = fmt.Sprintf(`"id": %q, `, id)
	}
	a := fmt.Sprint(amount)
	if s, ok := amount.(string); ok {
		a = fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf(`{%s"timeout_ms": 10000, "steps": [
		{"resource": "wallet", "operation": "debit", "params": {"account": %q, "amount": %s}},
		{"resource": "ledger", "operation": "credit", "params": {"account": %q, "amount": %s}}],
		"messages": [{"topic": %q, "key": %q, "value": {"from": %q, "to": %q, "amount": %s}}]}`,
		idField, from, a, to, a, e.topic, from, from, to, a)
}

func TestGlobalTxCommitRollbackAndRepeat(t *testing.T) {
	e := startGlobal(t, Options{})

	// Commit: debit in MariaDB, credit in PostgreSQL, one message.
	r := e.must(http.StatusOK, "POST", "/v1/global-transactions", e.transfer("t-1", 100, "A", "B"))
	var res api.GlobalTxResult
	decodeJSON(t, r.body, &res)
	if res.ID != "t-1" || res.Status != "committed" || len(res.Steps) != 2 || res.Steps[0].RowsAffected != 1 ||
		len(res.Offsets) != 1 || res.Offsets[0].Topic != e.topic || res.Duplicate {
		t.Fatalf("commit answered %s", r.body)
	}
	if got, want := e.balances(), [4]int64{900, 0, 1000, 100}; got != want {
		t.Fatalf("balances after commit %v, want %v", got, want)
	}
	if n := e.endOffset(); n != 1 {
		t.Fatalf("end offset %d after one committed message, want 1", n)
	}
	f := e.fetch(e.topic, 0, "offset=0")
	if len(f.Messages) != 1 || *f.Messages[0].Key != "A" {
		t.Fatalf("fetched %+v", f.Messages)
	}

	// A repeat of the id runs nothing and answers the first outcome.
	r = e.must(http.StatusOK, "POST", "/v1/global-transactions", e.transfer("t-1", 100, "A", "B"))
	decodeJSON(t, r.body, &res)
	if !res.Duplicate || res.Status != "committed" {
		t.Fatalf("repeat answered %s", r.body)
	}
	if got, want := e.balances(), [4]int64{900, 0, 1000, 100}; got != want || e.endOffset() != 1 {
		t.Fatalf("a repeat changed something: balances %v, end offset %d", got, e.endOffset())
	}

	// Status.
	r = e.must(http.StatusOK, "GET", "/v1/global-transactions/t-1", "")
	var st api.GlobalTx
	decodeJSON(t, r.body, &st)
	if st.Status != "committed" || len(st.Branches) != 3 || st.DecidedAt == nil || st.CreatedAt == "" {
		t.Fatalf("status %s", r.body)
	}
	for _, b := range st.Branches {
		if b.State != "committed" || b.Xid.FormatID != xa.FormatID {
			t.Errorf("branch %+v", b)
		}
	}

	// Insufficient funds: 409 naming the step, nothing changed anywhere.
	r = e.must(http.StatusConflict, "POST", "/v1/global-transactions", e.transfer("t-2", 5000, "A", "B"))
	decodeJSON(t, r.body, &res)
	if res.Status != "rolled_back" || res.Error == nil || res.Error.Code != "step_failed" ||
		res.Error.Message != "step 0 wallet.debit affected 0 rows, expected 1" {
		t.Fatalf("insufficient funds answered %s", r.body)
	}
	if got, want := e.balances(), [4]int64{900, 0, 1000, 100}; got != want || e.endOffset() != 1 {
		t.Fatalf("a rolled-back transfer changed something: balances %v, end offset %d", got, e.endOffset())
	}
	// Its repeat answers the same 409.
	r = e.must(http.StatusConflict, "POST", "/v1/global-transactions", e.transfer("t-2", 5000, "A", "B"))
	decodeJSON(t, r.body, &res)
	if !res.Duplicate || res.Status != "rolled_back" || res.Error == nil || res.Error.Code != "step_failed" {
		t.Fatalf("repeat of a rolled-back id answered %s", r.body)
	}
	// The same id for other work (another amount) is refused, not answered with the first
	// request's outcome as if it were this one's; nothing runs.
	r = e.must(http.StatusConflict, "POST", "/v1/global-transactions", e.transfer("t-2", 1, "A", "B"))
	if eb := errorBody(t, r); eb.Error.Code != "idempotency_key_reused" || eb.Error.Field != "id" {
		t.Fatalf("id reused for other work answered %s", r.body)
	}
	if got, want := e.balances(), [4]int64{900, 0, 1000, 100}; got != want {
		t.Fatalf("repeat of a rolled-back id ran: %v", got)
	}

	// The second step fails after the first one wrote: the first is rolled back too.
	body := `{"steps": [{"resource": "wallet", "operation": "debit", "params": {"account": "A", "amount": 10}},
		{"resource": "ledger", "operation": "credit", "params": {"account": "nobody", "amount": 10}}],
		"messages": [{"topic": "` + e.topic + `", "value": 1}]}`
	r = e.must(http.StatusConflict, "POST", "/v1/global-transactions", body)
	decodeJSON(t, r.body, &res)
	if res.Error == nil || !strings.HasPrefix(res.Error.Message, "step 1 ledger.credit affected 0 rows") {
		t.Fatalf("failing second step answered %s", r.body)
	}
	if got, want := e.balances(), [4]int64{900, 0, 1000, 100}; got != want || e.endOffset() != 1 {
		t.Fatalf("after a failed second step: balances %v, end offset %d", got, e.endOffset())
	}

	// Messages only (the broker alone), and steps only.
	e.must(http.StatusOK, "POST", "/v1/global-transactions", `{"messages": [{"topic": "`+e.topic+`", "value": "x"}]}`)
	e.must(http.StatusOK, "POST", "/v1/global-transactions", `{"steps": [{"resource": "ledger", "operation": "debit", "params": {"account": "B", "amount": 100}}]}`)
	if got, want := e.balances(), [4]int64{900, 0, 1000, 0}; got != want || e.endOffset() != 2 {
		t.Fatalf("balances %v, end offset %d", got, e.endOffset())
	}

	// No prepared branch is left behind.
	for _, in := range e.coord.List("", 0) {
		if !in.Status.Final() {
			t.Errorf("transaction %s is %s", in.ID, in.Status)
		}
	}
	r = e.must(http.StatusOK, "GET", "/v1/global-transactions?status=rolled_back&limit=10", "")
	var list api.GlobalTxList
	decodeJSON(t, r.body, &list)
	if len(list.Transactions) != 2 {
		t.Errorf("rolled_back list: %s", r.body)
	}
	// Metrics are the coordinator's business (registered by the serve command); readyz pings.
	e.must(http.StatusOK, "GET", "/readyz", "")
}

// TestGlobalTxBadInput: every malformed or unknown request is a 4xx naming the problem, and
// nothing runs.
func TestGlobalTxBadInput(t *testing.T) {
	e := startGlobal(t, Options{})
	step := func(res, op, params string) string {
		return `{"steps": [{"resource": "` + res + `", "operation": "` + op + `", "params": ` + params + `}]}`
	}
	for _, c := range []struct {
		name, body  string
		status      int
		code, field string
	}{
		{"unknown resource", step("vault", "debit", `{"account": "A", "amount": 1}`), 400, "unknown_resource", "steps[0].resource"},
		{"unknown operation", step("wallet", "refund", `{"account": "A", "amount": 1}`), 400, "unknown_operation", "steps[0].operation"},
		{"operation with a dot", step("wallet", "debit.x", `{}`), 400, "unknown_operation", "steps[0].operation"},
		{"broker as a step", step("broker", "debit", `{}`), 400, "unknown_operation", "steps[0].operation"},
		{"string for integer", step("wallet", "debit", `{"account": "A", "amount": "100"}`), 400, "invalid_parameter", "steps[0].params.amount"},
		{"fraction for integer", step("wallet", "debit", `{"account": "A", "amount": 1.5}`), 400, "invalid_parameter", "steps[0].params.amount"},
		{"fraction a float rounds up", step("wallet", "debit", `{"account": "A", "amount": 0.99999999999999999}`), 400, "invalid_parameter", "steps[0].params.amount"},
		{"fraction a float rounds down", step("wallet", "debit", `{"account": "A", "amount": 1.0000000000000001}`), 400, "invalid_parameter", "steps[0].params.amount"},
		{"object for integer", step("wallet", "debit", `{"account": "A", "amount": {"v": 1}}`), 400, "invalid_parameter", "steps[0].params.amount"},
		{"null for integer", step("wallet", "debit", `{"account": "A", "amount": null}`), 400, "invalid_parameter", "steps[0].params.amount"},
		{"number for string", step("wallet", "debit", `{"account": 7, "amount": 1}`), 400, "invalid_parameter", "steps[0].params.account"},
		{"below min", step("wallet", "debit", `{"account": "A", "amount": -100}`), 400, "invalid_parameter", "steps[0].params.amount"},
		{"too long", step("wallet", "debit", `{"account": "AAAAAAAAAAAAAAAAA", "amount": 1}`), 400, "invalid_parameter", "steps[0].params.account"},
		{"missing parameter", step("wallet", "debit", `{"account": "A"}`), 400, "invalid_parameter", "steps[0].params.amount"},
		{"unknown parameter", step("wallet", "debit", `{"account": "A", "amount": 1, "note": "x"}`), 400, "invalid_parameter", "steps[0].params.note"},
		{"params not an object", step("wallet", "debit", `[1]`), 400, "invalid_field", "steps[0].params"},
		{"resource missing", `{"steps": [{"operation": "debit"}]}`, 400, "invalid_field", "steps[0].resource"},
		{"unknown step field", `{"steps": [{"resource": "wallet", "operation": "debit", "sql": "DROP TABLE x"}]}`, 400, "invalid_field", "steps[0].sql"},
		{"steps not an array", `{"steps": {}}`, 400, "invalid_field", "steps"},
		{"nothing to do", `{"steps": []}`, 400, "invalid_field", "steps"},
		{"unknown field", `{"sql": "DELETE FROM wallets"}`, 400, "invalid_field", "sql"},
		{"bad id", `{"id": "a b", "messages": [{"topic": "` + e.topic + `", "value": 1}]}`, 400, "invalid_field", "id"},
		{"id not a string", `{"id": 5, "messages": [{"topic": "` + e.topic + `", "value": 1}]}`, 400, "invalid_field", "id"},
		{"timeout too long", `{"timeout_ms": 3600001, "messages": [{"topic": "` + e.topic + `", "value": 1}]}`, 400, "invalid_field", "timeout_ms"},
		{"timeout a string", `{"timeout_ms": "1s", "messages": [{"topic": "` + e.topic + `", "value": 1}]}`, 400, "invalid_field", "timeout_ms"},
		{"message without topic", `{"messages": [{"value": 1}]}`, 400, "invalid_field", "messages[0].topic"},
		{"unknown topic", `{"messages": [{"topic": "no.such.topic", "value": 1}]}`, 404, "unknown_topic", "messages[0].topic"},
		{"unknown partition", `{"messages": [{"topic": "` + e.topic + `", "value": 1, "partition": 3}]}`, 404, "unknown_partition", "messages[0].partition"},
		{"not json", `{"steps": [`, 400, "invalid_json", ""},
		{"empty", ``, 400, "invalid_json", ""},
		{"array body", `[]`, 400, "invalid_field", "body"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("POST", "/v1/global-transactions", c.body)
			eb := errorBody(t, r)
			if r.status != c.status || eb.Error.Code != c.code || eb.Error.Field != c.field {
				t.Errorf("status %d code %s field %q, want %d %s %q: %s", r.status, eb.Error.Code, eb.Error.Field, c.status, c.code, c.field, r.body)
			}
		})
	}
	if got, want := e.balances(), [4]int64{1000, 0, 1000, 0}; got != want || e.endOffset() != 0 {
		t.Fatalf("bad input changed something: balances %v, end offset %d", got, e.endOffset())
	}
	if n := len(e.coord.List("", 0)); n != 0 {
		t.Errorf("bad input began %d global transactions", n)
	}
	// Status and list parameters.
	if r := e.do("GET", "/v1/global-transactions/nope", ""); r.status != 404 || errorBody(t, r).Error.Code != "unknown_transaction" {
		t.Errorf("unknown id: %d %s", r.status, r.body)
	}
	for _, q := range []string{"status=done", "limit=0", "limit=x", "limit=10001"} {
		if r := e.do("GET", "/v1/global-transactions?"+q, ""); r.status != 400 || errorBody(t, r).Error.Code != "invalid_parameter" {
			t.Errorf("list ?%s: %d %s", q, r.status, r.body)
		}
	}
	// Resolve of unknown, of a finished one, and bad decisions.
	e.must(http.StatusOK, "POST", "/v1/global-transactions", e.transfer("r-1", 1, "A", "B"))
	for _, c := range []struct {
		id, body string
		status   int
		code     string
	}{
		{"nope", `{"decision": "commit"}`, 404, "unknown_transaction"},
		{"r-1", `{"decision": "commit"}`, 409, "not_in_doubt"},
		{"r-1", `{"decision": "maybe"}`, 400, "invalid_field"},
		{"r-1", `{}`, 400, "invalid_field"},
		{"r-1", `{"decision": "commit", "by": "x"}`, 400, "invalid_field"},
	} {
		r := e.do("POST", "/v1/global-transactions/"+c.id+"/resolve", c.body)
		if r.status != c.status || errorBody(t, r).Error.Code != c.code {
			t.Errorf("resolve %s %s: %d %s, want %d %s", c.id, c.body, r.status, r.body, c.status, c.code)
		}
	}
}

// mustCompile compiles operations against the coordinator's resources, as the server's
// configuration load does.
func mustCompile(t testing.TB, c *xa.Coordinator, cfg map[string]xa.OperationConfig) *xa.Operations {
	t.Helper()
	ops, err := xa.CompileOperations(cfg, c.Driver)
	if err != nil {
		t.Fatal(err)
	}
	return ops
}

// TestGlobalTxStartupChecks: compiled operations are checked against the coordinator's
// resources when the server is built (the compiler's own checks are xa's
// TestCompileOperations).
func TestGlobalTxStartupChecks(t *testing.T) {
	dir := t.TempDir()
	b := openBroker(t, dir)
	c := openCoordinator(t, dir, xa.Broker("broker", b))
	// Compiled for a configuration whose resources differ from the coordinator's.
	anyDB := func(string) (string, error) { return "mysql", nil }
	for name, key := range map[string]string{"unknown resource": "wallet.debit", "broker resource": "broker.debit"} {
		ops, err := xa.CompileOperations(map[string]xa.OperationConfig{key: {SQL: "UPDATE w SET b = b - :a"}}, anyDB)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := New(b, Options{Coordinator: c, Operations: ops, Logger: quietLogger()}); err == nil || !strings.Contains(err.Error(), "operations."+key) {
			t.Errorf("%s: New: %v", name, err)
		}
	}
	ops, err := xa.CompileOperations(map[string]xa.OperationConfig{"a.b": {SQL: "SELECT 1"}}, func(string) (string, error) { return "postgres", nil })
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(b, Options{Operations: ops, Logger: quietLogger()}); err == nil {
		t.Error("operations without a coordinator were accepted")
	}
	// Without a coordinator the endpoints answer 503; with one but no resource, a step is 400.
	ts := startServer(t, Options{})
	if r := ts.do("POST", "/v1/global-transactions", `{"messages": []}`); r.status != 503 {
		t.Errorf("no coordinator: %d %s", r.status, r.body)
	}
	ts2 := serve(t, b, Options{Coordinator: c})
	r := ts2.do("POST", "/v1/global-transactions", `{"steps": [{"resource": "wallet", "operation": "debit", "params": {}}]}`)
	if r.status != 400 || errorBody(t, r).Error.Code != "unknown_resource" {
		t.Errorf("no resources: %d %s", r.status, r.body)
	}
}

// TestGlobalTxReadyz: /readyz answers 503 while a configured resource cannot be reached.
func TestGlobalTxReadyz(t *testing.T) {
	dir := t.TempDir()
	b := openBroker(t, dir)
	// Port 1 on loopback: nothing listens there, the connection is refused at once.
	down, err := xa.OpenResource("down", "mysql", "root@tcp(127.0.0.1:1)/test?timeout=2s")
	if err != nil {
		t.Fatal(err)
	}
	c := openCoordinator(t, dir, down, xa.Broker("broker", b))
	ts := serve(t, b, Options{Coordinator: c})
	r := ts.do("GET", "/readyz", "")
	if r.status != 503 || errorBody(t, r).Error.Code != "not_ready" {
		t.Errorf("readyz with an unreachable resource: %d %s", r.status, r.body)
	}
}

// inDoubtCoordinator is a fault-injection fake: it wraps a real coordinator and reports one
// transaction as in_doubt, the state a heuristic outcome leaves (a branch finished by a DBA
// before its commit), which a real database cannot be made to produce on demand from here.
// It records the decision and who made it.
type inDoubtCoordinator struct {
	Coordinator
	decision xa.Decision
	by       string
}

func (f *inDoubtCoordinator) Resolve(ctx context.Context, id string, d xa.Decision, by string) (xa.TxInfo, error) {
	if id != "hz-1" {
		return f.Coordinator.Resolve(ctx, id, d, by)
	}
	f.decision, f.by = d, by
	now := time.Now()
	return xa.TxInfo{ID: id, Gtrid: id, Status: xa.StatusCommitting, Created: now, Decided: now, Deadline: now,
		Code: "resolved_" + string(d), Message: "resolved by " + by, ResolvedBy: by}, nil
}

func TestGlobalTxResolveAuth(t *testing.T) {
	e := startGlobal(t, Options{})
	fake := &inDoubtCoordinator{Coordinator: e.coord}
	ts := serve(t, e.b, Options{Coordinator: fake, Tokens: []Token{
		{Name: "payments", Token: "p-secret", Produce: []string{"*"}},
		{Name: "dba", Token: "d-secret", Admin: true},
	}})
	body := `{"decision": "rollback", "operator": "alice"}`
	if r := ts.do("POST", "/v1/global-transactions/hz-1/resolve", body, "Authorization", "Bearer p-secret"); r.status != 403 {
		t.Fatalf("a producer token resolved: %d %s", r.status, r.body)
	}
	r := ts.must(http.StatusOK, "POST", "/v1/global-transactions/hz-1/resolve", body, "Authorization", "Bearer d-secret")
	var st api.GlobalTx
	decodeJSON(t, r.body, &st)
	if fake.decision != xa.DecideRollback || !strings.HasPrefix(fake.by, "dba (operator alice) from ") || st.ResolvedBy != fake.by {
		t.Fatalf("decision %q by %q; answered %s", fake.decision, fake.by, r.body)
	}
	if r := ts.do("GET", "/v1/global-transactions?status=in_doubt", ""); r.status != 401 {
		t.Errorf("list without a token: %d", r.status)
	}
	ts.must(http.StatusOK, "GET", "/v1/global-transactions?status=in_doubt", "", "Authorization", "Bearer p-secret")
}
