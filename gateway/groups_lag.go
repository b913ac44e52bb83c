package gateway

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/groups"
	"github.com/prometheus/client_golang/prometheus"
)

// This file holds the consumer lag gauges of /metrics:
//
//	imago_consumer_committed_offset{group,topic,partition}  the group's committed (next) offset
//	imago_consumer_lag{group,topic,partition}               partition end - committed offset
//
// They are computed at scrape time from the coordinator's lag report (groups.LagReport): the
// groups this process served since it started, with offset store reads cached for a few
// seconds.

// lagCollector emits the consumer gauges of the attached coordinator.
type lagCollector struct {
	c              atomic.Pointer[groups.Coordinator]
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
	for _, l := range c.LagReport(time.Now()) {
		part := strconv.Itoa(l.Partition)
		ch <- prometheus.MustNewConstMetric(lc.committed, prometheus.GaugeValue, float64(l.Committed), l.Group, l.Topic, part)
		if l.HasEnd {
			ch <- prometheus.MustNewConstMetric(lc.lag, prometheus.GaugeValue, float64(max(0, l.End-l.Committed)), l.Group, l.Topic, part)
		}
	}
}
