package outbox

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the relay's Prometheus collectors, shared by every source (label source).
//
//	imago_outbox_backlog{source}                        rows waiting in the outbox (sampled)
//	imago_outbox_relayed_total{source}                  rows published by this process
//	imago_outbox_last_relayed_timestamp_seconds{source} Unix time of the last published batch
//	imago_outbox_lag_seconds{source}                    commit-to-publish delay per row (from created_at)
//	imago_outbox_active{source}                         1 while this process holds the source's lock
//	imago_outbox_errors_total{source,stage}             failed database or publish attempts
//	imago_outbox_reads_total{source,result}             reads of the outbox: rows, held (rows wait for an older transaction, or an id gap), empty
//	imago_outbox_batches_total{source}                  batches published and completed (relayed_total / batches_total: rows per batch)
type Metrics struct {
	backlog  *prometheus.GaugeVec
	relayed  *prometheus.CounterVec
	lastTime *prometheus.GaugeVec
	lag      *prometheus.HistogramVec
	active   *prometheus.GaugeVec
	errors   *prometheus.CounterVec
	reads    *prometheus.CounterVec
	batches  *prometheus.CounterVec
}

// NewMetrics registers the collectors on reg (nil: prometheus.DefaultRegisterer).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.DefaultRegisterer
	}
	m := &Metrics{
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "imago", Subsystem: "outbox", Name: "backlog",
			Help: "Rows waiting in the outbox table of the source (sampled every few seconds by the active relay)."}, []string{"source"}),
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "imago", Subsystem: "outbox", Name: "relayed_total",
			Help: "Outbox rows published and removed by this process."}, []string{"source"}),
		lastTime: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "imago", Subsystem: "outbox", Name: "last_relayed_timestamp_seconds",
			Help: "Unix time at which this process last published a batch of the source."}, []string{"source"}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "imago", Subsystem: "outbox", Name: "lag_seconds",
			Help:    "Delay from an outbox row's insert (created_at) to its publication, per row.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"source"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "imago", Subsystem: "outbox", Name: "active",
			Help: "1 while this process holds the source's advisory lock and relays it."}, []string{"source"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "imago", Subsystem: "outbox", Name: "errors_total",
			Help: "Failed attempts by stage (db, publish); the relay retries."}, []string{"source", "stage"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "imago", Subsystem: "outbox", Name: "reads_total",
			Help: "Reads of the outbox table by the active relay, by result: rows (a batch was read), held (rows exist but none is final yet: an older transaction is open, or an id gap is being checked), empty."}, []string{"source", "result"}),
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "imago", Subsystem: "outbox", Name: "batches_total",
			Help: "Batches published and completed (one database transaction each) by this process."}, []string{"source"}),
	}
	reg.MustRegister(m.backlog, m.relayed, m.lastTime, m.lag, m.active, m.errors, m.reads, m.batches)
	return m
}
