package gateway

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imagomq/imago/broker"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the Prometheus collectors. It implements broker.Observer, so it is created
// before the broker is opened and handed to both; New attaches the broker to it so that
// partition offsets and broker counters are read at scrape time.
//
// Exposed series (all prefixed imago_):
//
//	http_requests_total{route,code}              requests by route pattern and status
//	http_request_duration_seconds{route}         latency histogram
//	http_request_bytes_total{route}              request body bytes
//	http_response_bytes_total{route}             response body bytes
//	http_requests_in_flight                      requests being served
//	flush_messages, flush_requests, flush_bytes  per group commit (histograms)
//	flush_write_duration_seconds                 time in write(2) per group commit
//	fsync_duration_seconds                       time in fsync per group commit
//	partition_start_offset{topic,partition}      oldest stored offset
//	partition_end_offset{topic,partition}        one past the last durable message
//	partition_bytes{topic,partition}             bytes stored
//	broker_*                                     broker.Stats counters and gauges
//	transactions_total{kind,outcome}             local transactions and XA branches ended
//	                                             through the gateway, by outcome (tx.go)
//	consumer_committed_offset{group,topic,partition}  committed offset of the consumer groups
//	consumer_lag{group,topic,partition}          this process served, and their lag (groups_lag.go)
//	raft_*                                       cluster mode only (cluster_metrics.go)
type Metrics struct {
	gatherer prometheus.Gatherer

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytesIn  *prometheus.CounterVec
	bytesOut *prometheus.CounterVec
	inFlight prometheus.Gauge

	flushMessages prometheus.Histogram
	flushRequests prometheus.Histogram
	flushBytes    prometheus.Histogram
	flushWrite    prometheus.Histogram
	fsync         prometheus.Histogram
	proposal      *prometheus.HistogramVec // no labels: absent until the first proposal (cluster mode)

	brokerStats *brokerCollector
	txOutcomes  *prometheus.CounterVec
	groupLag    *lagCollector
	raft        *raftCollector

	mu     sync.Mutex
	routes map[string]*routeMetrics
}

// NewMetrics registers Imago's collectors on reg. A nil reg means prometheus.DefaultRegisterer.
// When reg is also a prometheus.Gatherer (a *prometheus.Registry is), /metrics serves it;
// otherwise it serves prometheus.DefaultGatherer.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	m := &Metrics{gatherer: prometheus.DefaultGatherer, routes: map[string]*routeMetrics{}}
	if g, ok := reg.(prometheus.Gatherer); ok {
		m.gatherer = g
	}
	latency := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imago_http_requests_total", Help: "HTTP requests by route pattern and status code.",
	}, []string{"route", "code"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "imago_http_request_duration_seconds", Help: "HTTP request latency by route pattern (long-poll waits included).",
		Buckets: latency,
	}, []string{"route"})
	m.bytesIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imago_http_request_bytes_total", Help: "Request body bytes read, by route pattern.",
	}, []string{"route"})
	m.bytesOut = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "imago_http_response_bytes_total", Help: "Response body bytes written, by route pattern.",
	}, []string{"route"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "imago_http_requests_in_flight", Help: "HTTP requests being served.",
	})
	m.flushMessages = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "imago_flush_messages", Help: "Messages written per group commit.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 15),
	})
	m.flushRequests = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "imago_flush_requests", Help: "Produce requests acknowledged per group commit.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 12),
	})
	m.flushBytes = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "imago_flush_bytes", Help: "Bytes written to the log per group commit.",
		Buckets: prometheus.ExponentialBuckets(256, 4, 10),
	})
	m.flushWrite = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "imago_flush_write_duration_seconds", Help: "Time in write(2) per group commit.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2.5, 12),
	})
	m.fsync = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "imago_fsync_duration_seconds", Help: "Time in fsync per group commit (commits that did not sync are not observed).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 15),
	})
	m.proposal = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "imago_raft_proposal_duration_seconds", Help: "Cluster mode, on the leader: from proposing a write to its entry being applied (a quorum's fsync and the apply).",
		Buckets: latency,
	}, nil)
	m.brokerStats = newBrokerCollector()
	m.txOutcomes = newTxOutcomes()
	m.groupLag = newLagCollector()
	m.raft = newRaftCollector()
	reg.MustRegister(m.raft, m.requests, m.duration, m.bytesIn, m.bytesOut, m.inFlight,
		m.flushMessages, m.flushRequests, m.flushBytes, m.flushWrite, m.fsync, m.brokerStats, m.txOutcomes, m.groupLag, m.proposal)
	return m
}

// Proposed implements broker.ProposalObserver.
func (m *Metrics) Proposed(d time.Duration) {
	if m == nil {
		return
	}
	m.proposal.WithLabelValues().Observe(d.Seconds())
}

// Flushed implements broker.Observer. It only updates lock-free histograms.
func (m *Metrics) Flushed(fs broker.FlushStats) {
	if m == nil {
		return
	}
	m.flushMessages.Observe(float64(fs.Messages))
	m.flushRequests.Observe(float64(fs.Requests))
	m.flushBytes.Observe(float64(fs.Bytes))
	m.flushWrite.Observe(fs.Write.Seconds())
	if fs.Sync > 0 {
		m.fsync.Observe(fs.Sync.Seconds())
	}
}

// attach makes the broker collector read b at scrape time.
func (m *Metrics) attach(b backend) { m.brokerStats.b.Store(&b) }

// route returns the pre-resolved collectors of one route pattern, so that serving a request
// does no label lookup for the common status codes.
func (m *Metrics) route(pattern string) *routeMetrics {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if rm := m.routes[pattern]; rm != nil {
		return rm
	}
	rm := &routeMetrics{
		m:        m,
		pattern:  pattern,
		duration: m.duration.WithLabelValues(pattern),
		in:       m.bytesIn.WithLabelValues(pattern),
		out:      m.bytesOut.WithLabelValues(pattern),
	}
	m.routes[pattern] = rm
	return rm
}

// routeMetrics are one route's collectors. Status counters are resolved on first use and
// cached in a fixed table indexed by status code.
type routeMetrics struct {
	m        *Metrics
	pattern  string
	duration prometheus.Observer
	in, out  prometheus.Counter
	codes    [600]atomic.Pointer[prometheus.Counter]
}

func (rm *routeMetrics) observe(status int, d time.Duration, in, out int64) {
	if rm == nil {
		return
	}
	rm.duration.Observe(d.Seconds())
	if in > 0 {
		rm.in.Add(float64(in))
	}
	if out > 0 {
		rm.out.Add(float64(out))
	}
	if status < 100 || status >= len(rm.codes) {
		rm.m.requests.WithLabelValues(rm.pattern, strconv.Itoa(status)).Inc()
		return
	}
	c := rm.codes[status].Load()
	if c == nil {
		cnt := rm.m.requests.WithLabelValues(rm.pattern, strconv.Itoa(status))
		c = &cnt
		rm.codes[status].Store(c)
	}
	(*c).Inc()
}

// brokerCollector reads partition offsets and broker counters at scrape time.
type brokerCollector struct {
	b atomic.Pointer[backend]

	start, end, size                                *prometheus.Desc
	topics, partitions, logBytes, pending, idemKeys *prometheus.Desc
	msgsIn, bytesIn, msgsOut, bytesOut, fsyncs      *prometheus.Desc
	recovered, truncated, openSeconds               *prometheus.Desc
	idemDamaged                                     *prometheus.Desc
}

func newBrokerCollector() *brokerCollector {
	pl := []string{"topic", "partition"}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &brokerCollector{
		start:       d("imago_partition_start_offset", "Oldest offset still stored in the partition.", pl),
		end:         d("imago_partition_end_offset", "One past the partition's last durable message.", pl),
		size:        d("imago_partition_bytes", "Bytes stored for the partition.", pl),
		topics:      d("imago_broker_topics", "Topics.", nil),
		partitions:  d("imago_broker_partitions", "Partitions over all topics.", nil),
		logBytes:    d("imago_broker_log_bytes", "Bytes in the commit log on disk.", nil),
		pending:     d("imago_broker_pending_bytes", "Bytes waiting for the flusher.", nil),
		idemKeys:    d("imago_broker_idempotency_keys", "Idempotency keys remembered.", nil),
		msgsIn:      d("imago_broker_messages_in_total", "Messages appended.", nil),
		bytesIn:     d("imago_broker_bytes_in_total", "Bytes appended.", nil),
		msgsOut:     d("imago_broker_messages_out_total", "Messages fetched.", nil),
		bytesOut:    d("imago_broker_bytes_out_total", "Bytes fetched.", nil),
		fsyncs:      d("imago_broker_fsyncs_total", "fsync calls on the log.", nil),
		recovered:   d("imago_broker_recovered_bytes", "Bytes replayed at the last open.", nil),
		truncated:   d("imago_broker_truncated_bytes", "Bytes cut from a torn tail at the last open.", nil),
		openSeconds: d("imago_broker_open_duration_seconds", "Time the last open took.", nil),
		idemDamaged: d("imago_broker_idempotency_damaged_files", "Idempotency files found damaged at the last open, set aside under repair/ and their keys rebuilt from the commit log.", nil),
	}
}

func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.start, c.end, c.size, c.topics, c.partitions, c.logBytes,
		c.pending, c.idemKeys, c.msgsIn, c.bytesIn, c.msgsOut, c.bytesOut, c.fsyncs,
		c.recovered, c.truncated, c.openSeconds, c.idemDamaged} {
		ch <- d
	}
}

func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	bp := c.b.Load()
	if bp == nil {
		return
	}
	defer func() { recover() }() // a broker closed during a scrape must not take the process down
	b := *bp
	for _, t := range b.Topics() {
		for _, p := range t.Partitions {
			part := strconv.Itoa(p.Partition)
			ch <- prometheus.MustNewConstMetric(c.start, prometheus.GaugeValue, float64(p.StartOffset), t.Name, part)
			ch <- prometheus.MustNewConstMetric(c.end, prometheus.GaugeValue, float64(p.EndOffset), t.Name, part)
			ch <- prometheus.MustNewConstMetric(c.size, prometheus.GaugeValue, float64(p.Bytes), t.Name, part)
		}
	}
	st := b.Stats()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	k := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	g(c.topics, float64(st.Topics))
	g(c.partitions, float64(st.Partitions))
	g(c.logBytes, float64(st.LogBytes))
	g(c.pending, float64(st.PendingBytes))
	g(c.idemKeys, float64(st.IdempotencyKeys))
	k(c.msgsIn, float64(st.MessagesIn))
	k(c.bytesIn, float64(st.BytesIn))
	k(c.msgsOut, float64(st.MessagesOut))
	k(c.bytesOut, float64(st.BytesOut))
	k(c.fsyncs, float64(st.Fsyncs))
	g(c.recovered, float64(st.RecoveredBytes))
	g(c.truncated, float64(st.TruncatedBytes))
	g(c.openSeconds, st.OpenDuration.Seconds())
	g(c.idemDamaged, float64(st.IdempotencyDamaged))
}
