package xa

import (
	"context"
	"errors"
	"testing"
	"time"
)

// The coordinator's own sessions are killed on the shared servers (KILL CONNECTION on
// MariaDB, pg_terminate_backend on PostgreSQL; each found by asking the branch itself for
// CONNECTION_ID() and pg_backend_pid(), so no other test's session is touched) at points of
// the protocol: before the prepare (the branches die active), and once every branch is
// prepared and the commit decision durable (the phase-2 commit on the pinned session fails;
// MariaDB keeps the branch attached to the dying session for a moment). The outcome must be
// the decision's, everywhere.
func TestBranchSessionsKilled(t *testing.T) {
	for _, tc := range []struct {
		name       string
		afterDecis bool
	}{
		{"before-prepare", false},
		{"after-decision", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			table := e.tables(map[string]int64{"a": 100, "b": 0})
			topic := "xat." + e.suffix
			node := newNode(t)
			o := e.options(node)
			o.Grace = time.Hour // only a decision may finish these branches
			e.rollbackLeftovers(node, o.Resources)
			c := e.open(o)
			ctx := context.Background()
			var myID, pgPID int64
			kill := func() error {
				if _, err := e.my.ExecContext(ctx, "KILL CONNECTION ?", myID); err != nil {
					return err
				}
				var ok bool
				return e.pg.QueryRowContext(ctx, "SELECT pg_terminate_backend($1)", pgPID).Scan(&ok)
			}
			if tc.afterDecis {
				c.hookAfterDecision = func(string) error {
					if err := kill(); err != nil {
						t.Error(err)
					}
					return nil
				}
			}
			id := "sesskill-" + e.suffix
			in, err := c.Run(ctx, BeginOptions{ID: id}, func(ctx context.Context, tx *GlobalTx) error {
				if err := transfer(ctx, tx, table, "a", "b", 40, msg(topic, "a", `{}`)); err != nil {
					return err
				}
				w, _ := tx.Enlist(ctx, "wallet")
				l, _ := tx.Enlist(ctx, "ledger")
				if err := w.QueryRow(ctx, "SELECT CONNECTION_ID()", nil, &myID); err != nil {
					return err
				}
				if err := l.QueryRow(ctx, "SELECT pg_backend_pid()", nil, &pgPID); err != nil {
					return err
				}
				if !tc.afterDecis {
					return kill()
				}
				return nil
			})
			want := StatusCommitted
			if tc.afterDecis {
				if err != nil || in.Status != StatusCommitting {
					t.Fatalf("the commit decision is durable: want committing and no error, got %s %v", in.Status, err)
				}
			} else {
				// The killed sessions fail the prepare: the transaction rolls back.
				if !errors.Is(err, ErrRolledBack) {
					t.Fatalf("sessions killed before the prepare: want a rollback, got %s %v", in.Status, err)
				}
				want = StatusRolledBack
			}
			waitFor(t, "the outcome to be applied everywhere", func() bool {
				got, err := c.Get(id)
				return err == nil && got.Status == want && len(e.prepared(node)) == 0
			})
			e.transferApplied(t, table, topic, want)
		})
	}
}
