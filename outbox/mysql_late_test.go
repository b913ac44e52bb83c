package outbox

import (
	"testing"
	"time"
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
}
