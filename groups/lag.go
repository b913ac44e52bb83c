package groups

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/imagomq/imago/offsetdb"
)

// This file holds what the consumer lag metrics read: the committed offsets of the groups
// this coordinator served since it started (joined or committed through it), with their
// partitions' ends. A broadcast member's offsets appear under the group name
// "<group>~<consumer>" as in the offset store. Offset store reads are cached for
// lagCacheTTL, so frequent scrapes do not load the database; a commit through this
// coordinator refreshes its group at the next read.

// lagCacheTTL is how long a group's offsets read for the lag report are reused.
const lagCacheTTL = 5 * time.Second

// lagReadTimeout bounds one offset store read of a lag report.
const lagReadTimeout = 2 * time.Second

type lagEntry struct {
	offsets []offsetdb.Offset
	read    time.Time
}

// lagCache holds the offsets read for the lag report, per store group.
type lagCache struct {
	mu      sync.Mutex
	entries map[string]lagEntry
}

func (lc *lagCache) invalidate(group string) {
	lc.mu.Lock()
	delete(lc.entries, group)
	lc.mu.Unlock()
}

// Lag is one committed offset in a lag report.
type Lag struct {
	Group     string // the offset store's group name
	Topic     string
	Partition int
	Committed int64 // the next offset the group reads
	// End is the partition's end offset; HasEnd is false when the partition is gone.
	End    int64
	HasEnd bool
}

// LagReport returns the committed offsets of the groups this coordinator served, with the
// partitions' ends. A store read that fails is logged and the last one read is reused.
func (c *Coordinator) LagReport(now time.Time) []Lag {
	ends := map[string][]int64{}
	for _, t := range c.b.Topics() {
		e := make([]int64, len(t.Partitions))
		for i, p := range t.Partitions {
			e[i] = p.EndOffset
		}
		ends[t.Name] = e
	}
	var out []Lag
	for _, g := range c.knownStoreGroups() {
		for _, o := range c.lagOffsets(g, now) {
			l := Lag{Group: g, Topic: o.Topic, Partition: o.Partition, Committed: o.Next}
			if e := ends[o.Topic]; o.Partition < len(e) {
				l.End, l.HasEnd = e[o.Partition], true
			}
			out = append(out, l)
		}
	}
	return out
}

// lagOffsets returns the group's offsets, from the cache when fresh.
func (c *Coordinator) lagOffsets(group string, now time.Time) []offsetdb.Offset {
	c.lag.mu.Lock()
	e, ok := c.lag.entries[group]
	c.lag.mu.Unlock()
	if ok && now.Sub(e.read) < lagCacheTTL {
		return e.offsets
	}
	ctx, cancel := context.WithTimeout(context.Background(), lagReadTimeout)
	offs, err := c.store.List(ctx, group)
	cancel()
	if err != nil {
		c.log.Warn("consumer lag metrics: read offsets failed", "group", group, "err", err)
		return e.offsets // stale beats nothing; empty when never read
	}
	c.lag.mu.Lock()
	c.lag.entries[group] = lagEntry{offsets: offs, read: now}
	c.lag.mu.Unlock()
	return offs
}

// knownStoreGroups returns the store group names this coordinator served.
func (c *Coordinator) knownStoreGroups() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.known))
	for k := range c.known {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
