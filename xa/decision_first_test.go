package xa

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/imagomq/imago/broker"
)

// decisionStores runs fn against the file log, the commit-log log and the table log (MariaDB
// and PostgreSQL).
func decisionStores(t *testing.T, fn func(t *testing.T, node string, open func() (decisionStore, []record))) {
	t.Run("file", func(t *testing.T) {
		dir := t.TempDir()
		fn(t, newNode(t), func() (decisionStore, []record) {
			l, recs, err := openDecisionLog(dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
			if err != nil {
				t.Fatal(err)
			}
			return l, recs
		})
	})
	t.Run("commitlog", func(t *testing.T) {
		dir := t.TempDir()
		var b *broker.Broker
		t.Cleanup(func() { b.Close() })
		fn(t, newNode(t), func() (decisionStore, []record) {
			if b != nil {
				b.Close() // reopened: its decisions are rebuilt from the log
			}
			b = openQuietBroker(t, dir, nil)
			l, recs, err := openBrokerDecisionLog(b, "", time.Hour, time.Now, nil, lazyDelay, nil, quietLogger())
			if err != nil {
				t.Fatal(err)
			}
			return l, recs
		})
	})
	eachSQLLogDB(t, func(t *testing.T, d sqlLogDB) {
		node := newNode(t)
		fn(t, node, func() (decisionStore, []record) { return openSQLLog(t, d, node, sqlLogOpts{}) })
	})
}

// The first decision for a gtrid wins: a later record deciding otherwise (a rollback after a
// commit, a commit after a rollback, a "done" whose outcome differs) is refused, nothing of it
// written, and the log keeps the first decision across a reopen. Repeating the same decision
// and an operator's resolve of an in_doubt transaction are taken.
func TestConflictingDecisionRefused(t *testing.T) {
	decisionStores(t, func(t *testing.T, node string, open func() (decisionStore, []record)) {
		ctx := context.Background()
		l, _ := open()
		commit := nodeRecord(node, 1, StatusCommitting)
		rollback := nodeRecord(node, 2, StatusRollingBack)
		rollback.Kind = recRollback
		for _, r := range []record{commit, rollback} {
			if err := l.appendSync(ctx, r); err != nil {
				t.Fatalf("first decision %s: %v", r.Status, err)
			}
		}
		late := func(r record, kind recKind, st Status) record {
			r.Kind, r.Status, r.Code = kind, st, "late"
			if st.Final() {
				r.Finished = time.Now() // within retention: the table keeps it
			}
			return r
		}
		for _, r := range []record{
			late(commit, recRollback, StatusRollingBack),
			late(commit, recDone, StatusRolledBack),
			late(rollback, recCommit, StatusCommitting),
			late(rollback, recDone, StatusCommitted),
		} {
			err := l.appendSync(ctx, r)
			if !errors.Is(err, ErrConflictingDecision) || !errors.Is(err, errNotWritten) {
				t.Fatalf("%s record (%s) after the other decision: %v; want ErrConflictingDecision, nothing written", r.Status, r.Gtrid[len(r.Gtrid)-2:], err)
			}
		}
		if err := l.failedErr(); err != nil {
			t.Fatalf("a refused decision failed the log: %v", err)
		}
		// The same decision again, and its "done", are taken.
		if err := l.appendSync(ctx, late(commit, recDone, StatusCommitted)); err != nil {
			t.Fatalf("done of the same decision: %v", err)
		}
		// Within one batch: the first queued decision wins over the second.
		third := nodeRecord(node, 3, StatusCommitting)
		if err := l.append(third); err != nil {
			t.Fatal(err)
		}
		if err := l.appendSync(ctx, late(third, recRollback, StatusRollingBack)); !errors.Is(err, ErrConflictingDecision) {
			t.Fatalf("rollback queued after a commit of the same gtrid: %v; want ErrConflictingDecision", err)
		}
		// An operator's resolve of an in_doubt transaction is its own decision.
		doubt := nodeRecord(node, 4, StatusInDoubt)
		doubt.Kind = recInDoubt
		doubt.Branches[0].CommitSent = false
		if err := l.appendSync(ctx, doubt); err != nil {
			t.Fatal(err)
		}
		if err := l.appendSync(ctx, late(doubt, recResolve, StatusRollingBack)); err != nil {
			t.Fatalf("resolve of an in_doubt transaction: %v", err)
		}
		if err := l.close(); err != nil {
			t.Fatal(err)
		}
		_, recs := open()
		got := byGtrid(recs)
		want := map[string]Status{commit.Gtrid: StatusCommitted, rollback.Gtrid: StatusRollingBack, third.Gtrid: StatusCommitting, doubt.Gtrid: StatusRollingBack}
		for g, st := range want {
			if got[g].Status != st {
				t.Fatalf("after reopen %s is %q; want %q", g, got[g].Status, st)
			}
		}
	})
}

// Presumed abort is recorded before it acts: an orphan prepared branch (no transaction in the
// log) is rolled back only once a rollback decision for its gtrid is durable, and that record
// then refuses a late commit decision for the same gtrid. While the log cannot take the
// record, the branches stay prepared.
func TestPresumedAbortRecordedBeforeRollback(t *testing.T) {
	e := newEnv(t)
	table := e.tables(map[string]int64{"a": 10})
	node := newNode(t)
	cleanLeftovers(t, e, node)
	gtrid := prepareOrphans(t, e, node, table)
	waitFor(t, "the orphans to be listed", func() bool { return len(e.prepared(node)) == 3 })

	o := e.options(node)
	o.Grace = time.Millisecond
	o.RecoveryInterval = time.Hour // passes run by the test only
	c := e.open(o)
	c.dlog.(*decisionLog).fail(errors.New("fsync decision log: input/output error (injected)"))
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		c.Recover(ctx)
	}
	if p := e.prepared(node); len(p) != 3 {
		t.Fatalf("presumed abort acted with a failed decision log (it could not record the rollback): %d of 3 branches left prepared", len(p))
	}
	c.Close()

	c = e.open(o)
	for i := 0; i < 2 && len(e.prepared(node)) > 0; i++ {
		if err := c.Recover(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if p := e.prepared(node); len(p) != 0 {
		t.Fatalf("presumed abort left %v prepared", p)
	}
	in, err := c.Get(gtrid)
	if err != nil || in.Code != "presumed_abort" || (in.Status != StatusRollingBack && in.Status != StatusRolledBack) {
		t.Fatalf("an orphan's presumed abort: %+v %v; want a rollback with code presumed_abort", in, err)
	}
	late := record{Kind: recCommit, Status: StatusCommitting, Gtrid: gtrid, Created: time.Now(), Decided: time.Now(),
		Branches: []recBranch{{Resource: "wallet", State: BranchPrepared, CommitSent: true}}}
	if err := c.dlog.appendSync(ctx, late); !errors.Is(err, ErrConflictingDecision) {
		t.Fatalf("a commit decision after the presumed abort: %v; want ErrConflictingDecision", err)
	}
	c.Close()
	_, recs, err := openDecisionLog(o.Dir, time.Hour, 1<<20, time.Now, nil, nil, quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := byGtrid(recs)[gtrid]; !ok || r.Status.Final() && r.Status != StatusRolledBack || !r.Status.Final() && r.Status != StatusRollingBack {
		t.Fatalf("the decision log after presumed abort holds %+v (found %v); want the rollback", r, ok)
	}
}
