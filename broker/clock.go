package broker

import "time"

// Wall-clock steps. Batch timestamps, index entries and idempotency keys carry the wall clock
// (unix ms), which an NTP step, a VM resumed after hours or an operator can move by hours or
// years. Two decisions that destroy something depend on the age of such a timestamp: retention
// by age deletes messages, and the idempotency window forgets keys (a producer's retry then
// appends a second copy). Both count an age twice, by the wall clock and by the monotonic clock
// (Options.Elapsed), which no step moves; they act only when both ages are past the limit:
//
//   - something this process wrote or applied is as old, by the monotonic clock, as the time
//     since then plus the wall clock's age of its timestamp at that moment (none for a
//     timestamp in the future): the flusher's own writes start at zero, so a message written
//     while the clock was set a year back is not taken for a year old once it is corrected;
//   - something found at Open (an index segment, a dedupe file, the replayed log) is as old as
//     the wall clock said at Open, plus the monotonic time since.
//
// So a step forward ages nothing faster than real time passes, and a step back keeps data and
// keys longer, until the wall clock agrees again. A VM's monotonic clock does not count the
// time it was suspended: after a resume retention and the window wait that much longer. What
// no process can see is a step made while the broker was down: at Open the wall clock is all
// there is (docs/operations.md, "Clock steps").

// reading is a reading of both clocks, in milliseconds.
type reading struct{ wall, mono int64 }

// clock reads both clocks.
func (b *Broker) clock() reading {
	return reading{wall: b.opts.Now().UnixMilli(), mono: b.opts.Elapsed().Milliseconds()}
}

// seenAt returns the monotonic reading at which a timestamp ts, learnt at c, had age zero.
func seenAt(ts int64, c reading) int64 { return c.mono - max(c.wall-ts, 0) }

// elapsedSince returns Elapsed's default: the time since now, measured on the monotonic reading
// of what the clock returns (time.Now carries one; a fake clock without one moves both).
func elapsedSince(clock func() time.Time) func() time.Duration {
	start := clock()
	return func() time.Duration { return clock().Sub(start) }
}
