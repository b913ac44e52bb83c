package xa

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/privatedb"
	"github.com/imagomq/imago/migrations"
)

// The decision table heals after a write of unknown outcome, without a restart
// (declog_sql_heal.go): the decisions are in a private PostgreSQL (or MariaDB), reached through a
// privatedb.LossyProxy (a lost answer, a connection cut before the command reached the server:
// faults no real server produces on demand) or killed outright.

// healEnv is a coordinator whose decision table is in a private PostgreSQL or MariaDB reached
// through proxy; direct is a pool to the server itself.
type healEnv struct {
	*env
	dialect string
	p       *privatedb.Server
	proxy   *privatedb.LossyProxy
	direct  *sql.DB
	node    string
	table   string
	topic   string
	o       Options
}

func newHealEnv(t *testing.T, dialect string) *healEnv {
	e := newEnv(t)
	h := &healEnv{env: e, dialect: dialect, p: privatedb.Open(t, dialect)}
	h.direct = h.p.DB()
	h.proxy = privatedb.NewLossyProxy(t, h.p.Addr())
	var decisions *sql.DB
	var err error
	if dialect == migrations.MySQL {
		decisions, err = OpenMySQLDB(h.p.DSNVia(h.proxy.Addr())) // as serve opens it
	} else {
		decisions, err = sql.Open(h.p.Driver(), h.p.DSNVia(h.proxy.Addr()))
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { decisions.Close() })
	h.table = e.tables(map[string]int64{"a": 100, "b": 0, "c": 100, "d": 0})
	h.topic = "xat." + e.suffix
	h.node = newNode(t)
	h.o = e.options(h.node)
	h.o.DecisionDB, h.o.DecisionDialect = decisions, dialect
	h.o.Grace = time.Hour // only a decision may finish these branches
	h.o.PhaseTimeout = 3 * time.Second
	h.o.RecoveryInterval = time.Hour // passes run when kicked and when the test calls Recover
	e.rollbackLeftovers(h.node, h.o.Resources)
	return h
}

// row is the status of gtrid's row in the table ("" when none, or when the server does not
// answer).
func (h *healEnv) row(gtrid string) string {
	s, _ := h.rowErr(gtrid)
	return s
}

func (h *healEnv) rowErr(gtrid string) (string, error) {
	q := "SELECT status FROM imago.xa_decisions WHERE gtrid = $1"
	if h.dialect == migrations.MySQL {
		q = "SELECT status FROM imago_xa_decisions WHERE gtrid = ?"
	}
	var s string
	err := h.direct.QueryRow(q, gtrid).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return s, err
}

// transfer runs the transfer of 40 from a to b as id.
func (h *healEnv) transfer(c *Coordinator, id string) (TxInfo, error) {
	return h.transferFrom(c, id, "a", "b")
}

func (h *healEnv) transferFrom(c *Coordinator, id, from, to string) (TxInfo, error) {
	return c.Run(context.Background(), BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
		return transfer(ctx, tx, h.table, from, to, 40, msg(h.topic, from, `{}`))
	})
}

// healed waits until the log takes decisions again and id is final everywhere, and checks that
// its outcome is want, that the transfer is applied everywhere or nowhere accordingly, that a
// repeat of id answers it, and that a new transaction commits.
func (h *healEnv) healed(t *testing.T, c *Coordinator, id string, want Status) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, "the decision log to heal and the transaction to be "+string(want)+" everywhere", func() bool {
		c.Recover(ctx)
		got, err := c.Get(id)
		return c.Ping(ctx) == nil && err == nil && got.Status.Final() && len(h.prepared(h.node)) == 0
	})
	got, _ := c.Get(id)
	if got.Status != want {
		t.Fatalf("after healing: %s (%s %s), want %s", got.Status, got.Code, got.Message, want)
	}
	h.transferApplied(t, h.table, h.topic, want)
	var dup *DuplicateError
	if _, err := h.transfer(c, id); !errors.As(err, &dup) || dup.Info.Status != want {
		t.Fatalf("a repeat of %s: %v, want its outcome %s", id, err, want)
	}
	if in, err := h.transfer(c, id+"-next"); err != nil || in.Status != StatusCommitted {
		t.Fatalf("a new transaction after healing: %s %v", in.Status, err)
	}
}

// TestSQLDecisionLogHealsLostCommitAnswer: the commit decision's write reaches PostgreSQL and
// commits, but its answer is lost with the connection. The client is told the outcome is
// unknown (in doubt, decision_log_failed) and the log fails; then, without a restart, the
// writer reads the row back on a new session: the decision is durable, recovery commits every
// branch, the transaction answers committed and new transactions prepare again.
func TestSQLDecisionLogHealsLostCommitAnswer(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		h := newHealEnv(t, dialect)
		c := h.open(h.o)
		c.hookAfterPrepare = func(gtrid string) error {
			waitFor(t, "the preparing record to be in the table", func() bool { return h.row(gtrid) == string(StatusPreparing) })
			// The commit decision's upsert carries the gtrid (a bind parameter): its answer is
			// lost once the server shows the decision.
			h.proxy.Arm(gtrid, privatedb.Until(func() bool { return h.row(gtrid) == string(StatusCommitting) }))
			return nil
		}
		id := "heal-lost-" + h.suffix
		in, err := h.transfer(c, id)
		c.hookAfterPrepare = nil
		if h.proxy.Cuts() != 1 || !errors.Is(err, ErrInDoubt) || !in.DecisionUnknown() {
			t.Fatalf("the commit decision's answer lost (%d cuts): want in doubt with the decision unknown, got %s (%s) %v", h.proxy.Cuts(), in.Status, in.Code, err)
		}
		if s := h.row(in.Gtrid); s != string(StatusCommitting) {
			t.Fatalf("the scene did not happen: the row is %q, want the commit decision", s)
		}
		h.healed(t, c, id, StatusCommitted)
	})
}

// TestSQLDecisionLogHealsUnsentCommit: the connection dies after the writer sent the commit
// decision, before it reached PostgreSQL (the row still holds the "preparing" record). The
// outcome is unknown to the client; healing finds the decision not written, writes the
// rollback decision first, and recovery rolls every branch back: nothing is committed
// anywhere, and the log takes new transactions without a restart.
func TestSQLDecisionLogHealsUnsentCommit(t *testing.T) {
	forEachDialect(t, func(t *testing.T, dialect string) {
		h := newHealEnv(t, dialect)
		h.proxy.Unsent = true
		c := h.open(h.o)
		c.hookAfterPrepare = func(gtrid string) error {
			waitFor(t, "the preparing record to be in the table", func() bool { return h.row(gtrid) == string(StatusPreparing) })
			h.proxy.Arm(gtrid, nil)
			return nil
		}
		id := "heal-unsent-" + h.suffix
		in, err := h.transfer(c, id)
		c.hookAfterPrepare = nil
		if h.proxy.Cuts() != 1 || !errors.Is(err, ErrInDoubt) || !in.DecisionUnknown() {
			t.Fatalf("the commit decision cut before the server (%d cuts): want in doubt with the decision unknown, got %s (%s) %v", h.proxy.Cuts(), in.Status, in.Code, err)
		}
		if a, b := h.balance(h.my, h.table, "a"), h.balance(h.pg, h.table, "b"); a != 100 || b != 0 {
			t.Fatalf("before any decision is known: wallet a=%d, ledger b=%d, want nothing applied", a, b)
		}
		h.healed(t, c, id, StatusRolledBack)
		if s := h.row(in.Gtrid); s != string(StatusRolledBack) {
			t.Fatalf("the row of the transaction is %q, want rolled_back", s)
		}
	})
}

// TestSQLDecisionLogHealsAfterDatabaseDown: PostgreSQL is killed while the commit decision is
// in flight and stays down for a while. Meanwhile the log stays failed (Ping reports it) and a
// new transaction rolls back cleanly, nothing prepared or applied; once the server is started
// again the log heals by itself, the transaction in doubt gets the outcome the table holds,
// applied everywhere, and new transactions commit.
func TestSQLDecisionLogHealsAfterDatabaseDown(t *testing.T) {
	h := newHealEnv(t, migrations.Postgres)
	c := h.open(h.o)
	ctx := context.Background()
	c.hookAfterPrepare = func(gtrid string) error {
		waitFor(t, "the preparing record to be in the table", func() bool { return h.row(gtrid) == string(StatusPreparing) })
		h.proxy.Arm(gtrid, h.p.Kill)
		return nil
	}
	id := "heal-down-" + h.suffix
	in, err := h.transfer(c, id)
	c.hookAfterPrepare = nil
	if h.proxy.Cuts() != 1 || !errors.Is(err, ErrInDoubt) || !in.DecisionUnknown() {
		t.Fatalf("the server killed under the commit decision (%d cuts): want in doubt with the decision unknown, got %s (%s) %v", h.proxy.Cuts(), in.Status, in.Code, err)
	}
	if err := c.Ping(ctx); !errors.Is(err, ErrDecisionLogFailed) {
		t.Fatalf("Ping with the decision table's server down: %v, want %v", err, ErrDecisionLogFailed)
	}
	// Other rows: a and b are locked by the branches prepared in doubt.
	in2, err := h.transferFrom(c, id+"-while-down", "c", "d")
	if !errors.Is(err, ErrRolledBack) || in2.Status != StatusRolledBack || in2.Code != CodeDecisionLogFailed {
		t.Fatalf("a transaction while the decision table is down: %s (%s) %v, want rolled back, decision_log_failed", in2.Status, in2.Code, err)
	}
	if a, b, m := h.balance(h.my, h.table, "a"), h.balance(h.pg, h.table, "b"), len(h.messages(h.topic)); a != 100 || b != 0 || m != 0 {
		t.Fatalf("while down: wallet a=%d, ledger b=%d, %d messages, want nothing applied", a, b, m)
	}
	if wc, ld := h.balance(h.my, h.table, "c"), h.balance(h.pg, h.table, "d"); wc != 100 || ld != 0 {
		t.Fatalf("while down: wallet c=%d, ledger d=%d, want the refused transfer applied nowhere", wc, ld)
	}
	for _, x := range h.prepared(h.node) {
		if !strings.HasSuffix(x, ":"+in.Gtrid) {
			t.Fatalf("while down, %s is prepared: only the branches of the transaction in doubt may be", x)
		}
	}
	h.p.Start()
	var s string
	waitFor(t, "the table to answer (the pool's sessions died with the server)", func() bool {
		s, err = h.rowErr(in.Gtrid)
		return err == nil
	})
	want := StatusRolledBack
	if s == string(StatusCommitting) || s == string(StatusCommitted) {
		want = StatusCommitted // the commit reached the disk before the kill
	}
	t.Logf("the commit decision after the kill: %s", want)
	h.healed(t, c, id, want)
	if got, _ := c.Get(id + "-while-down"); got.Status != StatusRolledBack {
		t.Fatalf("the transaction refused while down: %s", got.Status)
	}
}

// forEachDialect runs f on a decision table in PostgreSQL and in MariaDB.
func forEachDialect(t *testing.T, f func(t *testing.T, dialect string)) {
	for _, d := range []string{migrations.Postgres, migrations.MySQL} {
		t.Run(d, func(t *testing.T) { f(t, d) })
	}
}

// TestSQLDecisionLogEndsWriterSession: before reading the table back, healing ends the session
// that carried the write of unknown outcome and waits until the server no longer lists it
// (endSession), so that no statement of it can commit after the read. Here the session is
// alive and idle (the scene in which the server has not noticed the client is gone): it is
// ended, and the log's next write goes on a new session.
func TestSQLDecisionLogEndsWriterSession(t *testing.T) {
	eachSQLLogDB(t, func(t *testing.T, d sqlLogDB) {
		ctx := context.Background()
		node := newNode(t)
		l, _ := openSQLLog(t, d, node, sqlLogOpts{writeTimeout: 5 * time.Second})
		if err := l.appendSync(ctx, nodeRecord(node, 1, StatusCommitting)); err != nil {
			t.Fatal(err)
		}
		sess := l.sess // the writer's session; the writer is idle (its write was answered)
		if sess.id == 0 {
			t.Fatal("the writer's session was not identified")
		}
		listed := func() int {
			q := "SELECT count(*) FROM pg_stat_activity WHERE pid = $1"
			if d.dialect == migrations.MySQL {
				q = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?"
			}
			var n int
			if err := d.db.QueryRow(q, sess.id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if listed() != 1 {
			t.Fatalf("the writer's session %d is not listed by the server", sess.id)
		}
		conn, err := d.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := l.endSession(ctx, conn, sess); err != nil {
			t.Fatalf("end the writer's session: %v", err)
		}
		if n := listed(); n != 0 {
			t.Fatalf("the writer's session is still listed after endSession (%d)", n)
		}
		// The writer finds its session ended (the ping before a write) and opens another.
		if err := l.appendSync(ctx, nodeRecord(node, 1, StatusCommitted)); err != nil {
			t.Fatalf("a write after the session was ended: %v", err)
		}
		if l.sess.id == sess.id {
			t.Fatal("the writer kept the ended session")
		}
	})
}
