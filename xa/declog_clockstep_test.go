package xa

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The decision logs' clean-up (compaction of the file, the sweeps of the table and of the
// commit log's decisions) keeps a finished transaction's record until its retention has passed
// by the wall clock and by the monotonic clock, as the coordinator remembers it. A wall clock
// stepped forward past the client-id retention must drop nothing: a restart (or, in a cluster,
// a new leader) with the clock right again would otherwise forget the client id, and a repeat
// of it would run the transfer a second time. Each test steps a fake wall clock apart from
// Elapsed (steppedClock), for a record the log wrote and for one it read back at open.

// finishedRecord is sampleRecord(i) finished (committed) at the wall clock of k.
func finishedRecord(i int, k *steppedClock) record {
	r := sampleRecord(i)
	r.Kind, r.Status, r.Finished = recDone, StatusCommitted, k.now()
	return r
}

func TestDecisionLogCompactionSurvivesWallClockStep(t *testing.T) {
	for _, reopen := range []bool{false, true} {
		t.Run(map[bool]string{false: "written", true: "read back at open"}[reopen], func(t *testing.T) {
			dir := t.TempDir()
			k := newSteppedClock()
			open := func() *decisionLog {
				l, _, err := openDecisionLog(dir, time.Hour, 4096, k.now, k.elapsed, nil, quietLogger())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.close() })
				return l
			}
			inFile := func(gtrid string) bool {
				data, err := os.ReadFile(filepath.Join(dir, logFileName))
				if err != nil {
					t.Fatal(err)
				}
				_, recs, _ := replay(data)
				_, ok := byLast(recs)[gtrid]
				return ok
			}
			l := open()
			pay := finishedRecord(0, k)
			if err := l.appendSync(context.Background(), pay); err != nil {
				t.Fatal(err)
			}
			if reopen {
				l.close()
				k.advance(time.Minute, time.Minute)
				l = open()
			}
			k.advance(2*time.Hour, time.Minute) // the wall clock steps forward by two hours
			compactOnce(t, l, 1000)
			if !inFile(pay.Gtrid) {
				t.Fatal("compaction dropped a transaction finished two minutes ago because the wall clock stepped forward two hours: a restart forgets its client id")
			}
			k.advance(time.Hour, time.Hour) // the retention has passed by both clocks
			compactOnce(t, l, 2000)
			if inFile(pay.Gtrid) {
				t.Error("compaction kept a transaction past its retention by both clocks")
			}
		})
	}
}

// byLast maps each gtrid to its last record.
func byLast(recs []record) map[string]record {
	m := map[string]record{}
	for _, r := range recs {
		m[r.Gtrid] = r
	}
	return m
}

// The user-visible failure: a coordinator on the file log finishes pay-1, the wall clock steps
// forward two hours and the log compacts; the clock is set right and the coordinator restarts
// within the hour. A repeat of pay-1 must be answered with its outcome, not run again.
func TestClientIDSurvivesCompactionDuringWallClockStep(t *testing.T) {
	dir := t.TempDir()
	k := newSteppedClock()
	open := func() *Coordinator {
		o := NewOptions(dir)
		o.Logger = quietLogger()
		o.Now, o.Elapsed = k.now, k.elapsed
		o.CompactBytes = 4096
		c, err := Open(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	commit := func(c *Coordinator, id string) {
		t.Helper()
		tx, err := c.Begin(ctx, BeginOptions{ID: id, Digest: "a"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	c := open()
	commit(c, "pay-1")
	k.advance(2*time.Hour, time.Minute) // the wall clock steps forward by two hours
	path := filepath.Join(dir, logFileName)
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ { // later transactions, until the log has compacted
		if i == 10000 {
			t.Fatal("the decision log did not compact")
		}
		commit(c, fmt.Sprint("other-", i))
		if now, err := os.Stat(path); err == nil && !os.SameFile(before, now) {
			break
		}
	}
	c.Close()
	k.advance(-2*time.Hour, time.Minute) // the clock is set right; a restart
	c = open()
	defer c.Close()
	tx, err := c.Begin(ctx, BeginOptions{ID: "pay-1", Digest: "a"})
	if err == nil {
		tx.Rollback(ctx, nil) // a new transaction: end it, Close waits for it
	}
	var dup *DuplicateError
	if !errors.As(err, &dup) || dup.Info.Status != StatusCommitted {
		t.Fatalf("repeat of pay-1 after a restart: %v; want the committed duplicate (the transfer would run twice)", err)
	}
}

func TestCommitLogDecisionsSweepSurvivesWallClockStep(t *testing.T) {
	for _, mode := range []string{"written", "read back at open", "stepped while closed"} {
		reopen := mode != "written"
		t.Run(mode, func(t *testing.T) {
			b := openQuietBroker(t, t.TempDir(), nil)
			k := newSteppedClock()
			node := sampleRecord(0).Gtrid[:nodeIDLen]
			open := func() *brokerDecisionLog {
				l, _, err := openBrokerDecisionLog(b, node, time.Hour, k.now, k.elapsed, lazyDelay, nil, quietLogger())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.close() })
				return l
			}
			held := func(gtrid string) bool {
				for _, d := range b.Decisions() {
					if d.Key == gtrid {
						return true
					}
				}
				return false
			}
			l := open()
			pay := finishedRecord(0, k) // with a client id: held until the sweep drops it
			if err := l.appendSync(context.Background(), pay); err != nil {
				t.Fatal(err)
			}
			step := 2 * time.Hour // the wall clock steps forward by two hours
			if reopen {
				l.close()
				if mode == "stepped while closed" { // no leader ran meanwhile
					k.advance(step, 0)
					step = 0
				} else {
					k.advance(time.Minute, time.Minute)
				}
				l = open()
			}
			k.advance(step, time.Minute)
			l.sweep()
			if !held(pay.Gtrid) {
				t.Fatal("the sweep dropped a transaction finished two minutes ago because the wall clock stepped forward two hours: a new leader or a restart forgets its client id")
			}
			k.advance(time.Hour, time.Hour)
			l.sweep()
			if held(pay.Gtrid) {
				t.Error("the sweep kept a transaction past its retention by both clocks")
			}
		})
	}
}

// With the table, a row the coordinator read at open (as a new leader of a cluster's node id
// reads those of the former one) and a row it wrote are both kept through the step; another
// node's row is never this node's to delete.
func TestSQLDecisionLogSweepSurvivesWallClockStep(t *testing.T) {
	eachSQLLogDB(t, func(t *testing.T, d sqlLogDB) {
		ctx := context.Background()
		node, other := newNode(t), newNode(t)
		k := newSteppedClock()
		open := func(node string) *sqlDecisionLog {
			l, _ := openSQLLog(t, d, node, sqlLogOpts{now: k.now, elapsed: k.elapsed, sweepEvery: time.Hour})
			return l
		}
		finished := func(node string, i int) record {
			r := nodeRecord(node, i, StatusCommitted)
			r.Finished = k.now()
			return r
		}
		inTable := func(gtrid string) bool {
			var n int
			if err := d.db.QueryRow("SELECT COUNT(*) FROM "+d.table+" WHERE gtrid = "+d.ph(1), gtrid).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 1
		}
		l := open(node)
		read := finished(node, 1)
		if err := l.appendSync(ctx, read); err != nil {
			t.Fatal(err)
		}
		l.close()
		k.advance(time.Minute, time.Minute)
		l = open(node) // reads back read
		wrote := finished(node, 2)
		if err := l.appendSync(ctx, wrote); err != nil {
			t.Fatal(err)
		}
		lo := open(other)
		theirs := finished(other, 1)
		if err := lo.appendSync(ctx, theirs); err != nil {
			t.Fatal(err)
		}
		lo.close()
		l.close()                           // the writer stops: the test runs the sweep itself, when it wants
		k.advance(2*time.Hour, time.Minute) // the wall clock steps forward by two hours
		l.sweep(ctx)
		for _, r := range []record{read, wrote} {
			if !inTable(r.Gtrid) {
				t.Errorf("the sweep deleted %s, finished minutes ago, because the wall clock stepped forward two hours: a restart forgets its client id", r.Gtrid)
			}
		}
		k.advance(time.Hour, time.Hour)
		l.sweep(ctx)
		for _, r := range []record{read, wrote} {
			if inTable(r.Gtrid) {
				t.Errorf("the sweep kept %s past its retention by both clocks", r.Gtrid)
			}
		}
		if !inTable(theirs.Gtrid) {
			t.Error("a node's sweep deleted another node's row")
		}
	})
}
