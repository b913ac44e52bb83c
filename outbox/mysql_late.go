package outbox

import (
	"context"
	"fmt"
	"time"
)

// Late rows (MySQL/MariaDB). The gap check passes a missing id once no writer that could fill
// it is in sight (mysql_gap.go), and completing a batch stops the relay on a row inside the
// batch's range (ErrStrayRows). What neither sees is a writer that committed the missing id
// after the batch was completed: a writer kept off the CPU for longer than GapSettle between
// allocating its id and InnoDB listing its transaction, or a row inserted with an explicit id.
// Its row lands below the cursor and no read ever reaches it: a message lost without a trace.
//
// So the relay looks again. Each completed batch whose id range had ids missing (a passed gap)
// is queued, and its range is read again lateChecks after its completion (by default 10 s,
// 1 min and 10 min): a row found there stops the source with ErrStrayRows, the row in place,
// as at completion, and the operator re-inserts it (docs/outbox.md). A batch without missing
// ids cannot hide one and costs nothing; a recheck is one short range read of the primary key.
// The queue belongs to the Relay, so it outlives a reconnect; a relay that restarts, or a
// standby that takes over, does not recheck what an earlier process completed. A cursor moved
// back or a new epoch (an operator's reset) drops the ranges it no longer stands behind.

// defaultLateChecks are the delays, after a batch's completion, of its late-row rechecks.
var defaultLateChecks = []time.Duration{10 * time.Second, time.Minute, 10 * time.Minute}

// maxLateRanges bounds the queue: past it, adjacent ranges due together are merged.
const maxLateRanges = 4096

// lateRange is a completed batch's id range (lo, hi] to read again at due.
type lateRange struct {
	lo, hi int64
	epoch  int64
	due    time.Time // monotonic
	round  int       // index into the delays of the recheck due next
}

// lateRows is the queue of ranges to recheck, owned by the Relay (used by one session at a
// time, from the relay's goroutine).
type lateRows struct {
	delays []time.Duration
	q      []lateRange // in completion order (a range read again goes to the end)
}

// add queues (lo, hi] of epoch, completed now.
func (l *lateRows) add(lo, hi, epoch int64, now time.Time) {
	if len(l.delays) == 0 {
		return
	}
	due := now.Add(l.delays[0])
	if n := len(l.q); n > 0 {
		last := &l.q[n-1]
		// Consecutive batches completed within a second are one range, checked together.
		if last.hi == lo && last.epoch == epoch && last.round == 0 && due.Sub(last.due) < time.Second {
			last.hi = hi
			return
		}
	}
	if len(l.q) >= maxLateRanges {
		l.compact()
	}
	l.q = append(l.q, lateRange{lo: lo, hi: hi, epoch: epoch, due: due})
}

// compact merges pairs of adjacent ranges of one epoch and round, keeping the earlier due.
func (l *lateRows) compact() {
	out := l.q[:0]
	for _, r := range l.q {
		if n := len(out); n > 0 && out[n-1].hi == r.lo && out[n-1].epoch == r.epoch && out[n-1].round == r.round {
			out[n-1].hi = r.hi
			continue
		}
		out = append(out, r)
	}
	l.q = out
	if len(l.q) >= maxLateRanges { // nothing adjacent: drop the oldest checks rather than grow
		l.q = append(l.q[:0], l.q[len(l.q)-maxLateRanges/2:]...)
	}
}

// due removes and returns the ranges to read now, for the relay at cursor of epoch; those
// no longer behind the cursor (moved back) or of another epoch are dropped.
func (l *lateRows) due(now time.Time, cursor, epoch int64) []lateRange {
	var out []lateRange
	keep := l.q[:0]
	for _, r := range l.q {
		switch {
		case r.epoch != epoch || r.hi > cursor:
		case !now.Before(r.due):
			out = append(out, r)
		default:
			keep = append(keep, r)
		}
	}
	l.q = keep
	return out
}

// again requeues r for its next round, if any.
func (l *lateRows) again(r lateRange) {
	r.round++
	if r.round >= len(l.delays) {
		return
	}
	r.due = r.due.Add(l.delays[r.round] - l.delays[r.round-1])
	l.q = append(l.q, r)
}

// checkLate reads again the ranges due at cursor: ErrStrayRows (ErrPermanent) names the ids of
// rows committed there after their batch was completed.
func (s *mysqlStore) checkLate(ctx context.Context, cursor int64) error {
	if s.late == nil {
		return nil
	}
	for _, r := range s.late.due(time.Now(), cursor, s.epoch) {
		ids, err := s.strayIDs(ctx, r.lo, r.hi)
		if err != nil {
			s.late.q = append(s.late.q, r) // due still: read at the next call
			return fmt.Errorf("outbox: recheck completed batches for late rows: %w", err)
		}
		if len(ids) > 0 {
			return fmt.Errorf("%w: %w: source %s: ids %v committed below the cursor, inside (%d, %d], after that range was published",
				ErrPermanent, ErrStrayRows, s.o.Name, ids, r.lo, r.hi)
		}
		s.late.again(r)
	}
	return nil
}
