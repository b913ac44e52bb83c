package gateway

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/offsetdb"
	"github.com/prometheus/client_golang/prometheus"
)

// This file holds the consumer lag gauges of /metrics:
//
//	imago_consumer_committed_offset{group,topic,partition}  the group's committed (next) offset
//	imago_consumer_lag{group,topic,partition}               partition end - committed offset
//
// They are computed at scrape time for the groups this process served since it started
// (joined or committed through it). A broadcast member's offsets appear under the group
// name "<group>~<consumer>" as in the offset store. Offset store reads are cached for
// lagCacheTTL, so frequent scrapes do not load the database; a commit through this process
// refreshes its group at the next scrape.

// lagCacheTTL is how long a group's offsets read for /metrics are reused.
const lagCacheTTL = 5 * time.Second

// lagReadTimeout bounds one offset store read during a scrape.
const lagReadTimeout = 2 * time.Second

type lagEntry struct {
	offsets []offsetdb.Offset
	read    time.Time
}

// lagCache holds the offsets read for /metrics, per store group.
type lagCache struct {
	mu      sync.Mutex
	entries map[string]lagEntry
}

func (lc *lagCache) invalidate(group string) {
	lc.mu.Lock()
	delete(lc.entries, group)
	lc.mu.Unlock()
}

// offsets returns the group's offsets, from the cache when fresh.
func (c *groupCoordinator) lagOffsets(group string, now time.Time) []offsetdb.Offset {
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

// lagCollector emits the consumer gauges of the attached coordinator.
type lagCollector struct {
	c              atomic.Pointer[groupCoordinator]
	lag, committed *prometheus.Desc
}

func newLagCollector() *lagCollector {
	l := []string{"group", "topic", "partition"}
	return &lagCollector{
		lag:       prometheus.NewDesc("imago_consumer_lag", "Messages between a consumer group's committed offset and the partition's end.", l, nil),
		committed: prometheus.NewDesc("imago_consumer_committed_offset", "A consumer group's committed offset (the next offset it will read).", l, nil),
	}
}

func (lc *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- lc.lag
	ch <- lc.committed
}

func (lc *lagCollector) Collect(ch chan<- prometheus.Metric) {
	c := lc.c.Load()
	if c == nil {
		return
	}
	defer func() { recover() }() // a broker closed during a scrape must not take the process down
	ends := map[string][]int64{}
	for _, t := range c.b.Topics() {
		e := make([]int64, len(t.Partitions))
		for i, p := range t.Partitions {
			e[i] = p.EndOffset
		}
		ends[t.Name] = e
	}
	now := time.Now()
	for _, g := range c.knownStoreGroups() {
		for _, o := range c.lagOffsets(g, now) {
			part := strconv.Itoa(o.Partition)
			ch <- prometheus.MustNewConstMetric(lc.committed, prometheus.GaugeValue, float64(o.Next), g, o.Topic, part)
			if e := ends[o.Topic]; o.Partition < len(e) {
				ch <- prometheus.MustNewConstMetric(lc.lag, prometheus.GaugeValue, float64(max(0, e[o.Partition]-o.Next)), g, o.Topic, part)
			}
		}
	}
}
