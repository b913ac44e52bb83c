package broker

import (
	"time"

	"github.com/imagomq/imago/broker/internal/dedupe"
)

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
//     the wall clock said at Open, but never older than it was when the broker's data was last
//     written (its timestamp against b.found, the newest timestamp that data holds: OpenAge),
//     plus the monotonic time since.
//
// So a step forward ages nothing faster than real time passes, and a step back keeps data and
// keys longer, until the wall clock agrees again. A VM's monotonic clock does not count the
// time it was suspended: after a resume retention and the window wait that much longer.
//
// Only the wall clock spans a restart, and no process sees a step made while the broker was
// down (a host booting with its clock hours ahead): taken at its word it would delete segments
// and forget keys at once. The cap makes the time no broker wrote count as none. b.found is
// the newest timestamp the data Open reads holds: each partition's last index entry and every
// batch Open reads from the log (the replayed tail; in cluster mode the whole raft log), all
// the broker's own wall clock when it appended them (the leader's in a cluster). Not the
// checkpoint's WrittenAt: every Open ends with a checkpoint, so a start with a stepped clock
// would write the step into it without any data written, and the next restart would take the
// step as passed. A real outage (or an idle broker stopped) then keeps segments and keys up to
// one more retention age or window of running time, which only keeps them longer. Once new
// data is written at the stepped time, that time is the newest and a later restart counts the
// step (docs/operations.md, "Clock steps").

// reading is a reading of both clocks, in milliseconds.
type reading struct{ wall, mono int64 }

// clock reads both clocks.
func (b *Broker) clock() reading {
	return reading{wall: b.opts.Now().UnixMilli(), mono: b.opts.Elapsed().Milliseconds()}
}

// seenAt returns the monotonic reading at which a timestamp ts, learnt at c, had age zero.
func seenAt(ts int64, c reading) int64 { return c.mono - max(c.wall-ts, 0) }

// foundSeen is seenAt for a timestamp ts found at Open: its age then is dedupe.OpenAge.
func (b *Broker) foundSeen(ts int64) int64 {
	return b.opened.mono - dedupe.OpenAge(ts, b.found, b.opened.wall)
}

// elapsedSince returns Elapsed's default: the time since now, measured on the monotonic reading
// of what the clock returns (time.Now carries one; a fake clock without one moves both).
func elapsedSince(clock func() time.Time) func() time.Duration {
	start := clock()
	return func() time.Duration { return clock().Sub(start) }
}

// noteIndexTimes raises b.found to the timestamp of each partition's last index entry (a gap
// entry has none: the last real one before it), which is what Open reads of the messages the
// checkpoint covers. An entry that cannot be read counts for nothing. Open only.
func (b *Broker) noteIndexTimes() {
	for _, t := range b.table.Load().byID {
		for _, p := range t.parts {
			p.mu.RLock()
			for o := p.next - 1; o >= p.start.Load(); o-- {
				e, err := p.readEntry(o)
				if err != nil {
					break
				}
				if e != gapEntry {
					b.found = max(b.found, e.Timestamp)
					break
				}
			}
			p.mu.RUnlock()
		}
	}
}
