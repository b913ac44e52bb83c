package xa

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/imagomq/imago/internal/privatedb"
)

// Database crashes in the middle of the protocol, with real servers: a private MariaDB or
// PostgreSQL (privatedb_test.go) is killed with SIGKILL at a chosen moment of a transfer
// between a wallet (MariaDB), a ledger (PostgreSQL) and a settlement message (the broker), and
// started again on the same data. The other database is the shared server.

// hookRM wraps a real resource to run test code around its branches' prepare and phase-2
// commit on the pinned connection: it orders the parallel calls of a phase and times a kill. It injects no
// fault of its own.
type hookRM struct {
	resourceManager
	beforeCommit, afterCommit   func()
	beforePrepare, afterPrepare func()
}

func (h *hookRM) rm() resourceManager { return h }

// pool and setPhaseTimeout pass on what Open asks of an SQL resource (its node lease, its
// sessions' wait_timeout).
func (h *hookRM) pool() *sql.DB { return h.resourceManager.(interface{ pool() *sql.DB }).pool() }

func (h *hookRM) setPhaseTimeout(d time.Duration) {
	if p, ok := h.resourceManager.(interface{ setPhaseTimeout(time.Duration) }); ok {
		p.setPhaseTimeout(d)
	}
}

func (h *hookRM) start(ctx context.Context, xid Xid, timeout time.Duration) (branchConn, error) {
	bc, err := h.resourceManager.start(ctx, xid, timeout)
	if err != nil {
		return nil, err
	}
	return &hookBranch{branchConn: bc, h: h}, nil
}

type hookBranch struct {
	branchConn
	h *hookRM
}

func (b *hookBranch) prepare(ctx context.Context) (bool, error) {
	if b.h.beforePrepare != nil {
		b.h.beforePrepare()
	}
	ro, err := b.branchConn.prepare(ctx)
	if b.h.afterPrepare != nil {
		b.h.afterPrepare()
	}
	return ro, err
}

func (b *hookBranch) commit(ctx context.Context, onePhase bool) ([]broker.TopicPosition, error) {
	if !onePhase && b.h.beforeCommit != nil {
		b.h.beforeCommit()
	}
	pos, err := b.branchConn.commit(ctx, onePhase)
	if !onePhase && b.h.afterCommit != nil {
		b.h.afterCommit()
	}
	return pos, err
}

// TestDatabaseKilledInPhaseTwo kills the database of one branch after every branch prepared
// and the commit decision is durable: before any phase-2 commit, and after the other
// database's branch and the broker's committed (between one commit and the next). The client
// is answered with the commit decision (committing), and once the database is back recovery
// commits the killed branch: both sides of the transfer applied, the message there once,
// nothing left prepared.
func TestDatabaseKilledInPhaseTwo(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kill    string // the resource whose database dies
		between bool   // after the other branches committed (else right after the decision)
	}{
		{"mariadb/after-decision", "wallet", false},
		{"mariadb/between-commits", "wallet", true},
		{"postgres/after-decision", "ledger", false},
		{"postgres/between-commits", "ledger", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var p *privatedb.Server
			var db *sql.DB
			if tc.kill == "wallet" {
				p, db = privateMariaDB(t)
				e.my = db
			} else {
				p, db = privatePostgres(t)
				e.pg = db
			}
			table := e.tables(map[string]int64{"a": 100, "b": 0})
			topic := "xat." + e.suffix
			node := newNode(t)
			o := e.options(node)
			o.Grace = time.Hour // only the commit decision may finish these branches
			o.PhaseTimeout = 5 * time.Second
			wallet := &hookRM{resourceManager: MySQL("wallet", e.my).rm()}
			ledger := &hookRM{resourceManager: Postgres("ledger", e.pg).rm()}
			o.Resources = []Resource{wallet, ledger, Broker("broker", e.b)}
			e.rollbackLeftovers(node, o.Resources)
			c := e.open(o)

			killed, other := wallet, ledger
			if tc.kill == "ledger" {
				killed, other = ledger, wallet
			}
			if tc.between {
				otherDone := make(chan struct{})
				other.afterCommit = func() { close(otherDone) }
				killed.beforeCommit = func() {
					<-otherDone
					p.Kill()
				}
			} else {
				c.hookAfterDecision = func(string) error { p.Kill(); return nil }
			}
			ctx := context.Background()
			id := "kill-" + e.suffix
			in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
				return transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`))
			})
			if err != nil || in.Status != StatusCommitting {
				t.Fatalf("the commit decision is durable: want committing and no error, got %s %v", in.Status, err)
			}
			killed.beforeCommit, other.afterCommit = nil, nil

			p.Start()
			waitFor(t, "recovery to commit the killed database's branch", func() bool {
				got, err := c.Get(id)
				return err == nil && got.Status == StatusCommitted
			})
			if a, b, m := e.balance(e.my, table, "a"), e.balance(e.pg, table, "b"), len(e.messages(topic)); a != 60 || b != 40 || m != 1 {
				t.Fatalf("after the crash: wallet a=%d (want 60), ledger b=%d (want 40), %d messages (want 1)", a, b, m)
			}
			if left := e.prepared(node); len(left) != 0 {
				t.Fatalf("left prepared: %v", left)
			}
		})
	}
}
