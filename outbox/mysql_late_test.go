package outbox

import (
	"context"
	"testing"
	"time"

	"github.com/imagomq/imago/internal/testenv"
)

// The late-row queue reads each range again at each delay after its completion, merges
// consecutive batches, and drops what a cursor moved back or a new epoch no longer covers.
func TestLateRowsQueue(t *testing.T) {
	t0 := time.Now()
	l := lateRows{delays: []time.Duration{10 * time.Second, time.Minute}}
	l.add(0, 5, 0, t0)
	l.add(5, 9, 0, t0.Add(100*time.Millisecond)) // within a second: one range
	l.add(9, 12, 0, t0.Add(3*time.Second))
	if len(l.q) != 2 || l.q[0].lo != 0 || l.q[0].hi != 9 {
		t.Fatalf("queue %+v, want (0, 9] and (9, 12]", l.q)
	}
	if d := l.due(t0.Add(9*time.Second), 12, 0); len(d) != 0 {
		t.Fatalf("due before the first delay: %+v", d)
	}
	d := l.due(t0.Add(10*time.Second), 12, 0)
	if len(d) != 1 || d[0].hi != 9 {
		t.Fatalf("due at 10s: %+v, want (0, 9]", d)
	}
	l.again(d[0])
	if d := l.due(t0.Add(59*time.Second), 12, 0); len(d) != 1 || d[0].lo != 9 {
		t.Fatalf("due at 59s: %+v, want (9, 12] only", d)
	}
	d = l.due(t0.Add(60*time.Second), 12, 0)
	if len(d) != 1 || d[0].hi != 9 || d[0].round != 1 {
		t.Fatalf("due at 60s: %+v, want the second reading of (0, 9]", d)
	}
	l.again(d[0])
	if len(l.q) != 0 {
		t.Fatalf("a range read at every delay is still queued: %+v", l.q)
	}

	l.add(12, 20, 0, t0)
	l.add(30, 40, 0, t0)
	if d := l.due(t0.Add(time.Hour), 25, 0); len(d) != 1 || d[0].hi != 20 {
		t.Fatalf("cursor moved back to 25: due %+v, want (12, 20] only", d)
	}
	l.add(40, 50, 0, t0)
	if d := l.due(t0.Add(time.Hour), 50, 1); len(d) != 0 || len(l.q) != 0 {
		t.Fatalf("a new epoch: due %+v, queue %+v, want both empty", d, l.q)
	}

	for i := int64(0); i < 3*maxLateRanges; i++ {
		l.add(2*i, 2*i+1, 0, t0.Add(time.Duration(i)*2*time.Second)) // never adjacent
	}
	if len(l.q) > maxLateRanges {
		t.Fatalf("queue of %d ranges, want at most %d", len(l.q), maxLateRanges)
	}
	// Merged, not dropped: every range added is in a range of the queue, read no sooner
	// than it was due, with both of its rounds left.
	for i := int64(0); i < 3*maxLateRanges; i++ {
		due := t0.Add(time.Duration(i)*2*time.Second + 10*time.Second)
		found := false
		for _, r := range l.q {
			if r.lo <= 2*i && r.hi >= 2*i+1 && !r.due.Before(due) && r.round == 0 && r.from == r.lo {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("range (%d, %d] lost its rechecks in a full queue", 2*i, 2*i+1)
		}
	}
}

// A session that loads the source's state queues what no range of this Relay stands behind:
// all of (0, cursor] at first, after a new epoch or a cursor moved back (in place of the whole
// queue), the part another relay completed meanwhile, and nothing after a plain reconnect.
func TestLateRowsBegin(t *testing.T) {
	t0 := time.Now()
	l := lateRows{delays: []time.Duration{10 * time.Second, time.Minute}}
	l.begin(0, 0, t0)
	if len(l.q) != 0 {
		t.Fatalf("a source with nothing completed: queue %+v, want empty", l.q)
	}
	l.begin(100, 0, t0)
	if len(l.q) != 1 || l.q[0].lo != 0 || l.q[0].hi != 100 || l.q[0].from != 0 || !l.q[0].due.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("first load at cursor 100: queue %+v, want (0, 100] due at the first delay", l.q)
	}
	l.completed(150, 0) // a batch without missing ids: nothing queued, but covered
	l.begin(150, 0, t0.Add(5*time.Second))
	if len(l.q) != 1 || l.q[0].hi != 100 {
		t.Fatalf("reconnect at the cursor this Relay completed: queue %+v, want (0, 100] alone", l.q)
	}
	l.begin(180, 0, t0.Add(6*time.Second))
	if len(l.q) != 2 || l.q[1].lo != 150 || l.q[1].hi != 180 {
		t.Fatalf("reconnect after another relay moved the cursor to 180: queue %+v, want (150, 180] added", l.q)
	}
	l.begin(120, 0, t0.Add(7*time.Second))
	if len(l.q) != 1 || l.q[0].lo != 0 || l.q[0].hi != 120 || !l.q[0].due.Equal(t0.Add(17*time.Second)) {
		t.Fatalf("cursor moved back to 120: queue %+v, want (0, 120] alone, due anew", l.q)
	}
	l.begin(120, 1, t0.Add(8*time.Second))
	if len(l.q) != 1 || l.q[0].hi != 120 || l.q[0].epoch != 1 {
		t.Fatalf("a new epoch: queue %+v, want (0, 120] of epoch 1 alone", l.q)
	}
	l.completed(130, 0) // another epoch's: not this Relay's now
	l.begin(130, 1, t0.Add(9*time.Second))
	if len(l.q) != 2 || l.q[1].lo != 120 || l.q[1].hi != 130 {
		t.Fatalf("cursor 130 of epoch 1: queue %+v, want (120, 130] added", l.q)
	}
}

// A recheck whose read fails leaves every range it had not read due for the next call: none
// loses its rechecks to a database error (the relay reconnects and the queue is the Relay's).
func TestCheckLateKeepsRangesOnError(t *testing.T) {
	ctx := context.Background()
	o := Options{Name: "late_err", Dialect: MySQL, DSN: testenv.MySQLDSN(t), Table: "imago_outbox_missing_late_err"}
	if err := o.defaults(); err != nil {
		t.Fatal(err)
	}
	s, err := openMySQL(ctx, &o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	t0 := time.Now()
	s.late = &lateRows{delays: []time.Duration{time.Second}}
	s.late.add(0, 10, 0, t0.Add(-time.Hour))
	s.late.add(20, 30, 0, t0.Add(-time.Hour))
	if err := s.checkLate(ctx, 30); err == nil {
		t.Fatal("a recheck of a table that does not exist succeeded")
	}
	if len(s.late.q) != 2 {
		t.Fatalf("queue after a failed recheck: %+v, want both ranges still due", s.late.q)
	}
}
