package xa

import "time"

// finishedAges is the retention rule every decision log's clean-up follows (the file log's
// compaction, the table's sweep, the sweep of the commit log's decisions): a log keeps every
// unfinished transaction, and drops a finished one only once its retention has passed by the
// wall clock (Options.Now, against the record's Finished) and by the monotonic clock
// (Options.Elapsed), as Coordinator.prune forgets one. A wall clock stepped forward (NTP, a
// resumed VM) so drops nothing early: a log that dropped a record the coordinator still
// remembers would forget its client id at the next restart, and a repeat of the id would run
// the transfer a second time.
//
// The monotonic age of a record this log wrote runs from its write (at or after the finish the
// coordinator ages it from, so the log never drops it before the coordinator forgets it); that
// of a record read back at open is its age at open (openAge), then monotonic since, as
// Coordinator.load does.
//
// It is not safe for concurrent use: each log calls it from its writer (the commit-log one
// under its mutex).
type finishedAges struct {
	retention time.Duration
	now       func() time.Time
	elapsed   func() time.Duration
	mono      map[string]time.Duration // gtrid of a finished record → Elapsed at its finish (read at open: as if)
}

// newFinishedAges returns the rule for retention on the clocks now and elapsed; a nil elapsed
// is the monotonic reading of now (time.Now has one; a fake clock without one moves both), as
// Options.Elapsed defaults.
func newFinishedAges(retention time.Duration, now func() time.Time, elapsed func() time.Duration) *finishedAges {
	if elapsed == nil {
		start := now()
		elapsed = func() time.Duration { return now().Sub(start) }
	}
	return &finishedAges{retention: retention, now: now, elapsed: elapsed, mono: map[string]time.Duration{}}
}

// clocks reads both clocks once, for one pass of a clean-up.
func (a *finishedAges) clocks() (time.Time, time.Duration) { return a.now(), a.elapsed() }

// loaded notes the records read back at open, aged from their recorded finish (openAge).
func (a *finishedAges) loaded(recs map[string]record) {
	now, el := a.clocks()
	var newest time.Time
	for _, r := range recs {
		newest = r.newest(newest)
	}
	for g, r := range recs {
		if !r.Status.Final() {
			continue
		}
		a.mono[g] = el - openAge(r.Finished, newest, now)
	}
}

// openAge is the age given at open (a restart, or a new leader reading the log) to a record
// that finished at finished, in a log whose newest time is newest: its wall age, but no more
// than its age when the log was last written. Only the wall clock spans a restart, and a step
// of it while no coordinator ran (a host booting with its hardware clock hours ahead, a new
// leader whose clock is ahead) would otherwise age every record at once and forget client ids
// that a repeat still needs. So the time no coordinator wrote the log counts as none: records
// are kept the retention of a coordinator's running time at least, longer across a real
// outage, which only remembers a client id longer. A record with no finish time is 0 old.
func openAge(finished, newest, now time.Time) time.Duration {
	if finished.IsZero() {
		return 0
	}
	age := now.Sub(finished)
	if !newest.Before(finished) {
		age = min(age, newest.Sub(finished))
	}
	return max(age, 0)
}

// written notes r, now in the log: a finished one is aged from now by the monotonic clock.
func (a *finishedAges) written(r record) {
	if r.Status.Final() {
		a.mono[r.Gtrid] = a.elapsed()
	} else {
		delete(a.mono, r.Gtrid)
	}
}

// forget drops what it knows of gtrid (its record left the log).
func (a *finishedAges) forget(gtrid string) { delete(a.mono, gtrid) }

// keep reports whether the log keeps r at (now, el), read with clocks: unfinished, or finished
// less than the retention ago by either clock. A finished record it has not seen (none should
// be) is aged from now.
func (a *finishedAges) keep(r record, now time.Time, el time.Duration) bool {
	if !r.Status.Final() || now.Sub(r.Finished) < a.retention {
		return true
	}
	m, ok := a.mono[r.Gtrid]
	if !ok {
		a.mono[r.Gtrid] = el
		return true
	}
	return el-m < a.retention
}
