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
// ids cannot hide one and costs nothing; a recheck is a short range read of the primary key.
//
// The queue lives in the Relay's memory, so it outlives a reconnect but not the process, and a
// standby that takes over (or a new Relay of the source in the same process, as a cluster
// member makes when it leads again) never had it; a Relay run again after Close keeps it. So when a relay's session loads the source's
// state, it queues what no queue of its own stands behind: the whole range below the cursor,
// (0, cursor], on the same schedule. Published rows are deleted at completion (marked, in mark
// mode), so any row left at or below the cursor is a stray, whoever completed its range, and
// an earlier process's ranges are read at least as late after their completion as that
// process would have read them. A reconnect of the same Relay queues only the part of the
// range it did not complete itself, (covered, cursor], which is empty unless another relay
// moved the cursor meanwhile; a cursor found below what this Relay covered (a failover or a
// restore moved it back) or a new epoch (an operator's raise) queues (0, cursor] afresh in
// place of the whole queue, whose ranges it supersedes. The outbox table is the source's
// alone (a source is a table in one database), so the read needs no other scope.
//
// The lower end is 0, not a window below the cursor: the ranges an earlier process completed
// without their last recheck are those of its last 10 minutes, and no id count bounds them
// without guessing the writers' rate, which a missed row would pay for. In delete mode the read
// costs next to nothing: it visits only the rows present below the cursor (strays) and the
// deleted ones InnoDB has not yet purged (measured on MariaDB 10.11 with 500,000 rows deleted
// below the cursor: under 1 ms once purged, 0.4 s while an open snapshot held the purge back).
// In mark mode every published row stays below the cursor until the operator purges it, and
// the read visits each (about 1 µs a row, 0.5 s for 500,000). So a recheck reads at most
// defaultLateScanRows rows a statement and takes the rest of its range at the relay's next read:
// however large the table, the relay's session is held for milliseconds at a time.

// defaultLateChecks are the delays, after a batch's completion, of its late-row rechecks.
var defaultLateChecks = []time.Duration{10 * time.Second, time.Minute, 10 * time.Minute}

// defaultLateScanRows bounds the rows one recheck statement reads (about 10 ms in mark mode).
const defaultLateScanRows = 10000

// maxLateRanges bounds the queue: past it, ranges next to each other in it are merged.
const maxLateRanges = 4096

// lateRange is a completed batch's id range (lo, hi] to read again at due.
type lateRange struct {
	lo, hi int64
	from   int64 // the reading of this round goes on after from (lo until it began)
	epoch  int64
	due    time.Time // monotonic
	round  int       // index into the delays of the recheck due next
}

// lateRows is the queue of ranges to recheck, owned by the Relay (used by one session at a
// time, from the relay's goroutine).
type lateRows struct {
	delays []time.Duration
	q      []lateRange // in completion order (a range read again goes to the end)

	// Every id at or below covered (of coveredEpoch) is in a range this Relay queued, or was
	// completed by it in a batch without missing ids; valid once began.
	began        bool
	covered      int64
	coveredEpoch int64
}

// begin queues, when a session has loaded the source's state (cursor of epoch), the part of
// (0, cursor] that this Relay does not stand behind yet: all of it the first time, after a
// new epoch or when the cursor went below what it covered; (covered, cursor] when another
// relay moved the cursor on meanwhile; nothing after a plain reconnect.
func (l *lateRows) begin(cursor, epoch int64, now time.Time) {
	lo := l.covered
	if !l.began || epoch != l.coveredEpoch || cursor < l.covered {
		lo = 0
		l.q = l.q[:0] // (0, cursor] holds every range still due, read no earlier than they were due
	}
	l.began, l.covered, l.coveredEpoch = true, cursor, epoch
	if cursor > lo {
		l.add(lo, cursor, epoch, now)
	}
}

// completed records that this Relay moved the cursor of epoch to end.
func (l *lateRows) completed(end, epoch int64) {
	if l.began && epoch == l.coveredEpoch {
		l.covered = max(l.covered, end)
	}
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
		if last.hi == lo && last.epoch == epoch && last.round == 0 && last.from == last.lo && due.Sub(last.due) < time.Second {
			last.hi = hi
			return
		}
	}
	if len(l.q) >= maxLateRanges {
		l.compact()
	}
	l.q = append(l.q, lateRange{lo: lo, hi: hi, from: lo, epoch: epoch, due: due})
}

// compact halves the queue by merging each pair of ranges of one epoch next to each other in
// it into one range spanning both, rather than drop any: the ids between them are below the
// cursor too, where any row is a stray, so reading them costs a read and misses nothing. The
// merged range takes the earlier round and the later due, so that each of its parts is still
// read at every delay it had left, none sooner than it was due (a row committed late is found
// by a later reading as well as by an earlier one). The queue holds one epoch (begin empties it
// at a new one), so one pass halves it.
func (l *lateRows) compact() {
	out := l.q[:0]
	for i := 0; i < len(l.q); i++ {
		r := l.q[i]
		if i+1 < len(l.q) && l.q[i+1].epoch == r.epoch {
			o := l.q[i+1]
			r.lo, r.hi = min(r.lo, o.lo), max(r.hi, o.hi)
			r.round = min(r.round, o.round)
			r.due = later(r.due, o.due)
			r.from = r.lo
			i++
		}
		out = append(out, r)
	}
	l.q = out
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
	r.from = r.lo
	if r.round >= len(l.delays) {
		return
	}
	r.due = r.due.Add(l.delays[r.round] - l.delays[r.round-1])
	l.q = append(l.q, r)
}

// checkLate reads again the ranges due at cursor: ErrStrayRows (ErrPermanent) names the ids of
// rows committed there after their batch was completed. A range with more rows to read than
// one statement reads (lateScan) goes on at the next call, still due; a read that fails leaves
// every range due that it had not read, for the next call.
func (s *mysqlStore) checkLate(ctx context.Context, cursor int64) error {
	if s.late == nil {
		return nil
	}
	due := s.late.due(time.Now(), cursor, s.epoch)
	for i, r := range due {
		ids, done, err := s.lateScan(ctx, &r)
		if err != nil {
			s.late.q = append(s.late.q, due[i:]...) // due still, every one: read at the next call
			return fmt.Errorf("outbox: recheck completed batches for late rows: %w", err)
		}
		if len(ids) > 0 {
			return fmt.Errorf("%w: %w: source %s: ids %v committed below the cursor, inside (%d, %d], after that range was published",
				ErrPermanent, ErrStrayRows, s.o.Name, ids, r.lo, r.hi)
		}
		if !done {
			s.late.q = append(s.late.q, r) // due still, from where this read ended
			continue
		}
		if s.o.lateChecked != nil {
			s.o.lateChecked(r.lo, r.hi, r.round)
		}
		s.late.again(r)
	}
	return nil
}

// lateScan reads up to defaultLateScanRows rows of (r.from, r.hi] in id order and returns
// the ids (up to 20) of those not relayed: in delete mode every row, in mark mode those
// without relayed_at. done reports that the read reached r.hi; otherwise r.from is moved to
// the last row read.
func (s *mysqlStore) lateScan(ctx context.Context, r *lateRange) (ids []int64, done bool, err error) {
	unrelayed := "1"
	if s.o.Mode == ModeMark {
		unrelayed = "relayed_at IS NULL"
	}
	st, err := s.stmt(ctx, `SELECT id, `+unrelayed+` FROM `+s.o.Table+` WHERE id > ? AND id <= ? ORDER BY id LIMIT ?`)
	if err != nil {
		return nil, false, err
	}
	limit := s.o.lateScanRows
	if limit <= 0 {
		limit = defaultLateScanRows
	}
	rows, err := st.QueryContext(ctx, r.from, r.hi, limit)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	n, last := 0, r.from
	for rows.Next() {
		var stray bool
		if err := rows.Scan(&last, &stray); err != nil {
			return nil, false, err
		}
		n++
		if stray && len(ids) < 20 {
			ids = append(ids, last)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, false, err
	}
	if n < limit {
		return ids, true, nil
	}
	r.from = last
	return ids, last >= r.hi, nil
}
