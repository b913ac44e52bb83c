package groups

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/imagomq/imago/offsetdb"
)

// Offsets past a partition's end. A group's committed offset is never beyond the end of its
// partition while the log keeps what it acknowledged: a consumer commits only what it read.
// One that is beyond means the log lost acknowledged messages: a data directory restored from
// a backup older than the offset store (a database is backed up apart), or a log cut short.
// New messages then take the offsets of the lost ones, and since a commit never moves
// an offset backwards, the group would skip them: silently, once the partition has grown past
// the stored offset, and for good. So at start, before any member can join, a single node moves
// such offsets back to the partition's end and says so at Error.
//
// Not in a cluster: a leader's log holds every acknowledged entry, and a new leader's broker
// may not have applied its whole log when the groups start, so the ends it shows may be short.
//
// A topic the restored directory lacks altogether keeps its offsets at start: there is no end
// to move them to. If it is created again, every message in it is new, and the coordinator
// moves such an offset to the partition's start when a member is about to read from it
// (pastEnd): moving it to the end, as the poll does with a cursor past the end, would skip
// whatever was produced between the creation and that member's first poll.

// pastEndLog begins the Error line of an offset moved back from past its partition's end.
const pastEndLog = "a group's committed offset was past its partition's end: the log lacks messages acknowledged to the group " +
	"(a data directory restored from a backup older than the offset store, or a log cut short)"

// Clamped is one committed offset moved back to its partition's end.
type Clamped struct {
	Group     string
	Topic     string
	Partition int
	Was, End  int64
}

// ClampPastEnd moves every committed offset of store that lies past its partition's end in b
// back to that end (offsetdb.Store.Reset) and returns what it moved. Offsets of topics or
// partitions b does not have are left alone (see pastEnd for a topic created again). It is meant for start-up, before members join: a
// live member would commit forward again.
func ClampPastEnd(ctx context.Context, b Backend, store offsetdb.Store, log *slog.Logger) ([]Clamped, error) {
	if log == nil {
		log = slog.Default()
	}
	ends := map[Partition]int64{}
	for _, t := range b.Topics() {
		for _, p := range t.Partitions {
			ends[Partition{t.Name, p.Partition}] = p.EndOffset
		}
	}
	names, err := store.Groups(ctx)
	if err != nil {
		return nil, fmt.Errorf("clamp offsets past the end: list groups: %w", err)
	}
	var out []Clamped
	for _, g := range names {
		offs, err := store.List(ctx, g)
		if err != nil {
			return out, fmt.Errorf("clamp offsets past the end: list offsets of group %q: %w", g, err)
		}
		for _, o := range offs {
			end, ok := ends[Partition{o.Topic, o.Partition}]
			if !ok || o.Next <= end {
				continue
			}
			if err := store.Reset(ctx, g, o.Topic, o.Partition, end); err != nil {
				return out, fmt.Errorf("clamp offsets past the end: group %q, %s/%d: move %d back to %d: %w", g, o.Topic, o.Partition, o.Next, end, err)
			}
			log.Error(pastEndLog+"; moved to the end, so that new messages are not skipped",
				"group", g, "topic", o.Topic, "partition", o.Partition, "offset", o.Next, "end_offset", end)
			out = append(out, Clamped{Group: g, Topic: o.Topic, Partition: o.Partition, Was: o.Next, End: end})
		}
	}
	return out, nil
}

// pastEnd returns where a member starts in p, whose committed offset in the store group sg is
// next. That is next, unless next lies past the partition's end: the log lacks messages the
// group consumed (see above), and the offset is moved back in the store first. To the end
// for a topic the broker had when the coordinator was made (ClampPastEnd's choice: what the
// log holds then predates the loss), and to the start for one created since, whose messages
// are all new: nothing in it was consumed, and a member starting at its end would never
// see what came before its first poll. Redelivery, which at-least-once allows, is preferred to
// a skip. A topic or partition that is gone keeps next (the poll leaves it out).
func (c *Coordinator) pastEnd(ctx context.Context, sg string, p Partition, next int64) (int64, error) {
	info, err := c.b.Topic(p.Topic)
	if err != nil || p.Partition < 0 || p.Partition >= len(info.Partitions) {
		return next, nil
	}
	pi := info.Partitions[p.Partition]
	if next <= pi.EndOffset {
		return next, nil
	}
	to, why := pi.EndOffset, "moved to the end"
	if !c.atStart[p.Topic] {
		to, why = pi.StartOffset, "the topic was created since this process started, so every message in it is new: moved to its start"
	}
	if err := c.store.Reset(ctx, sg, p.Topic, p.Partition, to); err != nil {
		return 0, &StoreError{Op: "move a committed offset past the partition's end back", Err: err}
	}
	c.lag.invalidate(sg)
	c.log.Error(pastEndLog+"; "+why,
		"group", sg, "topic", p.Topic, "partition", p.Partition, "offset", next, "end_offset", pi.EndOffset, "now", to)
	return to, nil
}
