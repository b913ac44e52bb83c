package xa

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/imagomq/imago/internal/privatedb"
	"github.com/imagomq/imago/internal/testenv"
)

// Answers lost on the wire: privatedb.LossyProxy, between the coordinator's pool and the
// shared server, forwards the command that holds a marker, drops the server's answer, waits
// until the server shows the command's effect (the branch listed as prepared, or no longer
// listed), and cuts the connection.

// TestLostAnswers loses the answer of a branch's PREPARE and of its phase-2 COMMIT, on MariaDB
// and on PostgreSQL (a PREPARE sent with the last statement too, ExecPrepare). A lost PREPARE
// answer may hide a prepared branch: the transaction rolls back and recovery rolls that
// branch back (the rollback decision durable first); a lost COMMIT answer is no failure: the
// decision is commit and the branch counts as committed once it is gone. Either way the
// outcome is applied everywhere and the client is told the decision.
func TestLostAnswers(t *testing.T) {
	for _, tc := range []struct {
		name     string
		resource string
		marker   string
		commit   bool // the commit decision is taken (the commit's answer is lost)
		early    bool // the ledger's statement and PREPARE go together (ExecPrepare)
		fatal    bool // the answer arrives, with the session's termination before its end
	}{
		{"mariadb/prepare", "wallet", "XA PREPARE", false, false, false},
		{"mariadb/commit", "wallet", "XA COMMIT", true, false, false},
		{"postgres/prepare", "ledger", "PREPARE TRANSACTION", false, false, false},
		{"postgres/exec-prepare", "ledger", "PREPARE TRANSACTION", false, true, false},
		{"postgres/exec-prepare-terminated", "ledger", "PREPARE TRANSACTION", false, true, true},
		{"postgres/commit", "ledger", "COMMIT PREPARED", true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			table := e.tables(map[string]int64{"a": 100, "b": 0})
			topic := "xat." + e.suffix
			node := newNode(t)
			var proxy *privatedb.LossyProxy
			if tc.resource == "wallet" {
				cfg, err := mysql.ParseDSN(testenv.MySQLDSN(t))
				if err != nil {
					t.Fatal(err)
				}
				proxy = privatedb.NewLossyProxy(t, cfg.Addr)
				cfg.Addr = proxy.Addr()
				db, err := OpenMySQLDB(cfg.FormatDSN())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				e.my = db
			} else {
				u, err := url.Parse(testenv.PostgresDSN(t))
				if err != nil {
					t.Fatal(err)
				}
				proxy = privatedb.NewLossyProxy(t, u.Host)
				proxy.Fatal = tc.fatal
				u.Host = proxy.Addr()
				db, err := sql.Open("pgx", u.String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				e.pg = db
			}
			o := e.options(node)
			o.Grace = time.Hour // only a decision may finish these branches
			o.PhaseTimeout = 5 * time.Second
			o.RecoveryInterval = time.Hour // passes run when kicked and when the test calls Recover
			e.rollbackLeftovers(node, o.Resources)
			c := e.open(o)
			ctx := context.Background()
			rm := MySQL("wallet", e.my).rm()
			if tc.resource == "ledger" {
				rm = Postgres("ledger", e.pg).rm()
			}
			// listed reports whether the resource lists gtrid's branch as prepared (false when
			// it cannot be asked: the proxy may poll after the test's pools closed).
			listed := func(gtrid string) bool {
				xids, _ := rm.recover(context.Background())
				for _, x := range xids {
					if string(x.Gtrid) == gtrid {
						return true
					}
				}
				return false
			}
			id := "lost-" + e.suffix
			in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
				gtrid := tx.Gtrid()
				if tc.commit {
					proxy.Arm(tc.marker, privatedb.Until(func() bool { return !listed(gtrid) }))
				} else {
					proxy.Arm(tc.marker, privatedb.Until(func() bool { return listed(gtrid) }))
				}
				if !tc.early {
					return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
				}
				w, _ := tx.Enlist(ctx, "wallet")
				if _, err := w.Exec(ctx, "UPDATE "+table+" SET balance = balance - ? WHERE id = ?", 40, "a"); err != nil {
					return err
				}
				if err := tx.Publish(ctx, msg(topic, "a", `{}`)); err != nil {
					return err
				}
				l, _ := tx.Enlist(ctx, "ledger")
				_, err := l.ExecPrepare(ctx, "UPDATE "+table+" SET balance = balance + $1 WHERE id = $2", 40, "b")
				return err
			})
			if proxy.Cuts() != 1 {
				t.Fatalf("the proxy cut %d answers, want 1", proxy.Cuts())
			}
			want := StatusCommitted
			if tc.commit {
				if err != nil || in.Status != StatusCommitting && in.Status != StatusCommitted {
					t.Fatalf("a lost commit answer after the commit decision: want the commit (no error), got %s %v", in.Status, err)
				}
			} else {
				if !errors.Is(err, ErrRolledBack) {
					t.Fatalf("a lost prepare answer: want a rollback, got %s %v", in.Status, err)
				}
				want = StatusRolledBack
				// A branch still prepared is not rolled back yet: neither it nor the
				// transaction may be reported so.
				if listed(in.Gtrid) {
					for _, b := range in.Branches {
						if b.Resource == tc.resource && b.State != BranchPrepared {
							t.Errorf("the %s branch is prepared on its server, but the answer says %s", b.Resource, b.State)
						}
					}
					if in.Status != StatusRollingBack {
						t.Errorf("a branch is still prepared, but the answer's status is %s, want rolling_back", in.Status)
					}
				}
			}
			waitFor(t, "the outcome to be applied everywhere", func() bool {
				c.Recover(ctx)
				got, err := c.Get(id)
				return err == nil && got.Status == want && len(e.prepared(node)) == 0
			})
			e.transferApplied(t, table, topic, want)
		})
	}
}
