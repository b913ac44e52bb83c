package xa

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics. The coordinator keeps its own Prometheus collectors (it is the one place that sees
// phase durations and recovery actions as they happen); Collector hands them to whatever
// registry serves /metrics. Nothing is registered globally.
type metrics struct {
	transactions *prometheus.CounterVec   // outcome
	phase        *prometheus.HistogramVec // phase
	recovery     *prometheus.CounterVec   // resource, action
	timeouts     prometheus.Counter
	heals        prometheus.Counter
	fsync        prometheus.Histogram
	gauges       []prometheus.Collector
	// Label lookups done once: each transaction observes several phases and one outcome.
	// A series is resolved on its first use, so /metrics shows no series before it happened.
	phases   [len(phaseNames)]atomic.Pointer[prometheus.Observer]
	outcomes [len(outcomeNames)]atomic.Pointer[prometheus.Counter]
}

// The phases and outcomes whose series are kept resolved (metrics.phases, metrics.outcomes).
var (
	phaseNames   = [...]string{"prepare", "decide", "commit", "one_phase", "rollback"}
	outcomeNames = [...]Status{StatusCommitted, StatusCommitting, StatusRolledBack, StatusRollingBack, StatusInDoubt}
)

func newMetrics(c *Coordinator) *metrics {
	m := &metrics{
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imago_xa_transactions_total",
			Help: "Global transactions by outcome when their owner returned: committed, committing (phase 2 left to recovery), rolled_back, rolling_back, in_doubt.",
		}, []string{"outcome"}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "imago_xa_phase_duration_seconds",
			Help:    "Duration of the coordinator's phases: prepare, decide (commit decision fsync), commit (phase 2), one_phase, rollback.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"phase"}),
		recovery: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "imago_xa_recovery_actions_total",
			Help: "Recovery actions by resource: commit, rollback, presumed_abort, in_doubt, error, held_by_session (a listed branch another session still holds: XAER_NOTA).",
		}, []string{"resource", "action"}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imago_xa_timeouts_total",
			Help: "Global transactions rolled back because they passed their timeout before a decision.",
		}),
		heals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "imago_xa_decision_log_heals_total",
			Help: "Times the decision table healed after a write of unknown outcome: it was read back, the commit decisions not written were rolled back, and the log took decisions again without a restart.",
		}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "imago_xa_decision_log_fsync_seconds",
			Help:    "Duration of the decision log's durable writes: the file's fsyncs, or the commits of the decision table.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
	}
	gauge := func(name, help string, f func(Stats) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f(c.Stats())) })
	}
	m.gauges = []prometheus.Collector{
		gauge("imago_xa_in_doubt", "Global transactions in doubt, waiting for an operator's resolve.", func(s Stats) int { return s.InDoubt }),
		gauge("imago_xa_active", "Global transactions running in this process.", func(s Stats) int { return s.Active }),
		gauge("imago_xa_pending", "Decided global transactions whose phase 2 waits for recovery.", func(s Stats) int { return s.Pending }),
	}
	return m
}

func (m *metrics) observeFsync(d time.Duration) { m.fsync.Observe(d.Seconds()) }

func (m *metrics) outcome(s Status) {
	for i, name := range outcomeNames {
		if name == s {
			resolved(&m.outcomes[i], func() prometheus.Counter { return m.transactions.WithLabelValues(string(s)) }).Inc()
			return
		}
	}
	m.transactions.WithLabelValues(string(s)).Inc()
}

// observePhase records the duration of a phase (one of phaseNames) that began at began.
func (m *metrics) observePhase(phase string, began time.Time) {
	d := time.Since(began).Seconds()
	for i, name := range phaseNames {
		if name == phase {
			resolved(&m.phases[i], func() prometheus.Observer { return m.phase.WithLabelValues(phase) }).Observe(d)
			return
		}
	}
	m.phase.WithLabelValues(phase).Observe(d)
}

// resolved returns the collector p holds, storing the one resolve returns first.
func resolved[T any](p *atomic.Pointer[T], resolve func() T) T {
	if c := p.Load(); c != nil {
		return *c
	}
	c := resolve()
	p.Store(&c)
	return c
}

func (m *metrics) all() []prometheus.Collector {
	return append([]prometheus.Collector{m.transactions, m.phase, m.recovery, m.timeouts, m.heals, m.fsync}, m.gauges...)
}

// Collector returns the coordinator's metrics for a Prometheus registry:
// imago_xa_transactions_total{outcome}, imago_xa_phase_duration_seconds{phase},
// imago_xa_recovery_actions_total{resource,action}, imago_xa_timeouts_total,
// imago_xa_decision_log_heals_total, imago_xa_decision_log_fsync_seconds, and the gauges
// imago_xa_in_doubt, imago_xa_active, imago_xa_pending.
func (c *Coordinator) Collector() prometheus.Collector { return collector{c.metrics} }

type collector struct{ m *metrics }

func (k collector) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range k.m.all() {
		c.Describe(ch)
	}
}

func (k collector) Collect(ch chan<- prometheus.Metric) {
	for _, c := range k.m.all() {
		c.Collect(ch)
	}
}
