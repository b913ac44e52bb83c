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
//	imago_consumer_poll_rewinds_total{group}                 poll answers that never reached
//	                                                         their member (a poll's positions
//	                                                         moved the cursor back)
//
// They are computed at scrape time from the coordinator's lag report (groups.LagReport): the
// groups this process served since it started, with offset store reads cached for a few
// seconds.

// lagCollector emits the consumer gauges of the attached coordinator.
type lagCollector struct {
	c                       atomic.Pointer[groups.Coordinator]
	lag, committed, rewinds *prometheus.Desc
}

func newLagCollector() *lagCollector {
	l := []string{"group", "topic", "partition"}
	return &lagCollector{
		lag:       prometheus.NewDesc("imago_consumer_lag", "Messages between a consumer group's committed offset and the partition's end.", l, nil),
		committed: prometheus.NewDesc("imago_consumer_committed_offset", "A consumer group's committed offset (the next offset it will read).", l, nil),
		rewinds: prometheus.NewDesc("imago_consumer_poll_rewinds_total",
			"Poll answers that never reached their group member: a later poll's positions moved the member's cursor back to read them again.", []string{"group"}, nil),
	}
}

func (lc *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- lc.lag
	ch <- lc.committed
	ch <- lc.rewinds
}

func (lc *lagCollector) Collect(ch chan<- prometheus.Metric) {
	c := lc.c.Load()
	if c == nil {
		return
	}
	defer func() { recover() }() // a broker closed during a scrape must not take the process down
	for g, n := range c.PollRewinds() {
		ch <- prometheus.MustNewConstMetric(lc.rewinds, prometheus.CounterValue, float64(n), g)
	}
	for _, l := range c.LagReport(time.Now()) {
		part := strconv.Itoa(l.Partition)
		ch <- prometheus.MustNewConstMetric(lc.committed, prometheus.GaugeValue, float64(l.Committed), l.Group, l.Topic, part)
		if l.HasEnd {
			ch <- prometheus.MustNewConstMetric(lc.lag, prometheus.GaugeValue, float64(max(0, l.End-l.Committed)), l.Group, l.Topic, part)
		}
	}
}
