package groups

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/imagomq/imago/broker"
)

// MemberInfo describes a live member.
type MemberInfo struct {
	ID             string
	ConsumerID     string // "" when the join named none
	Topics         []string
	SessionTimeout time.Duration
	LastSeen       time.Time
	Partitions     []Partition
	Cursors        map[Partition]int64 // where the next poll reads, per partition polled
}

// OffsetStatus is one committed offset of a group with its partition's end.
type OffsetStatus struct {
	Topic     string
	Partition int
	Offset    int64 // the next offset to read
	EndOffset int64 // -1 when the partition is gone
	Lag       int64
	UpdatedAt time.Time
	Consumer  string // broadcast: whose offset this is; "" in a clustered group
}

// Status is a group's live membership and committed offsets.
type Status struct {
	Mode       Mode // "" for a group with neither live members nor broadcast offsets
	Generation int64
	Members    []MemberInfo // sorted by ID
	Offsets    []OffsetStatus
}

// Summary is one group in a listing.
type Summary struct {
	Name    string
	Mode    Mode // "" when not known (no live member, clustered offsets)
	Members int
}

// describe returns the live membership of a group (ok false when none).
func (c *Coordinator) describe(name string) (mode Mode, generation int64, members []MemberInfo, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[name]
	if g == nil {
		return "", 0, nil, false
	}
	for _, m := range g.members {
		members = append(members, MemberInfo{ID: m.id, ConsumerID: strings.TrimPrefix(m.consumer, m.id),
			Topics: m.topics, SessionTimeout: m.timeout, LastSeen: m.lastSeen, Partitions: slices.Clone(m.assigned),
			Cursors: maps.Clone(m.cursors)})
	}
	slices.SortFunc(members, func(a, b MemberInfo) int { return strings.Compare(a.ID, b.ID) })
	return g.mode, g.generation, members, true
}

// Status returns a group's membership and its offsets in the store (a broadcast group's
// offsets of every consumer). A group with neither is ErrUnknownGroup.
func (c *Coordinator) Status(ctx context.Context, group string) (Status, error) {
	storeGroups := []string{group}
	all, err := c.store.Groups(ctx)
	if err != nil {
		return Status{}, &StoreError{Op: "list groups", Err: err}
	}
	for _, name := range all {
		if strings.HasPrefix(name, group+BroadcastSep) {
			storeGroups = append(storeGroups, name)
		}
	}
	var out Status
	topics := map[string]broker.TopicInfo{}
	for _, sg := range storeGroups {
		offs, err := c.store.List(ctx, sg)
		if err != nil {
			return Status{}, &StoreError{Op: "read the group's offsets", Err: err}
		}
		for _, o := range offs {
			st := OffsetStatus{Topic: o.Topic, Partition: o.Partition, Offset: o.Next, EndOffset: -1,
				UpdatedAt: o.CommittedAt, Consumer: strings.TrimPrefix(sg, group+BroadcastSep)}
			if sg == group {
				st.Consumer = ""
			}
			info, ok := topics[o.Topic]
			if !ok {
				info, _ = c.b.Topic(o.Topic) // a topic that is gone has no end: -1
				topics[o.Topic] = info
			}
			if o.Partition < len(info.Partitions) {
				st.EndOffset = info.Partitions[o.Partition].EndOffset
				st.Lag = max(0, st.EndOffset-o.Next)
			}
			out.Offsets = append(out.Offsets, st)
		}
	}
	var live bool
	out.Mode, out.Generation, out.Members, live = c.describe(group)
	if !live && len(out.Offsets) == 0 {
		return Status{}, fmt.Errorf("%w: group %q has no committed offset and no live member", ErrUnknownGroup, group)
	}
	if !live && len(storeGroups) > 1 {
		out.Mode = Broadcast
	}
	return out, nil
}

// List returns every group with live members or committed offsets, sorted by name.
func (c *Coordinator) List(ctx context.Context) ([]Summary, error) {
	all, err := c.store.Groups(ctx)
	if err != nil {
		return nil, &StoreError{Op: "list groups", Err: err}
	}
	c.mu.Lock()
	byName := make(map[string]Summary, len(c.groups))
	for name, g := range c.groups {
		byName[name] = Summary{Name: name, Mode: g.mode, Members: len(g.members)}
	}
	c.mu.Unlock()
	for _, name := range all {
		base, _, broadcast := strings.Cut(name, BroadcastSep)
		if _, ok := byName[base]; ok {
			continue
		}
		sum := Summary{Name: base}
		if broadcast {
			sum.Mode = Broadcast
		}
		byName[base] = sum
	}
	out := make([]Summary, 0, len(byName))
	for _, g := range byName {
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b Summary) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
