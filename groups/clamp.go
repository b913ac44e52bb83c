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

// Clamped is one committed offset moved back to its partition's end.
type Clamped struct {
	Group     string
	Topic     string
	Partition int
	Was, End  int64
}

// ClampPastEnd moves every committed offset of store that lies past its partition's end in b
// back to that end (offsetdb.Store.Reset) and returns what it moved. Offsets of topics or
// partitions b does not have are left alone. It is meant for start-up, before members join: a
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
			log.Error("a group's committed offset was past its partition's end: the log lacks messages acknowledged to the group "+
				"(a data directory restored from a backup older than the offset store, or a log cut short); moved to the end, so that new messages are not skipped",
				"group", g, "topic", o.Topic, "partition", o.Partition, "offset", o.Next, "end_offset", end)
			out = append(out, Clamped{Group: g, Topic: o.Topic, Partition: o.Partition, Was: o.Next, End: end})
		}
	}
	return out, nil
}
