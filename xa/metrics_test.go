package xa

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The kept series count every observation, phases and outcomes outside the kept set still
// count, and a series appears only once it has been observed.
func TestMetricsPhasesAndOutcomes(t *testing.T) {
	m := newMetrics(&Coordinator{})
	began := time.Now().Add(-2 * time.Millisecond)
	m.observePhase("prepare", began)
	m.observePhase("prepare", began)
	m.observePhase("other", began)
	m.outcome(StatusCommitted)
	m.outcome(StatusCommitted)
	m.outcome(StatusRolledBack)
	m.outcome(Status("other"))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m.phase, m.transactions)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			k := mf.GetName() + "/" + s.GetLabel()[0].GetValue()
			if h := s.GetHistogram(); h != nil {
				got[k] = float64(h.GetSampleCount())
			} else {
				got[k] = s.GetCounter().GetValue()
			}
		}
	}
	want := map[string]float64{
		"imago_xa_phase_duration_seconds/prepare": 2,
		"imago_xa_phase_duration_seconds/other":   1,
		"imago_xa_transactions_total/committed":   2,
		"imago_xa_transactions_total/rolled_back": 1,
		"imago_xa_transactions_total/other":       1,
	}
	if len(got) != len(want) {
		t.Fatalf("series %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("series %v, want %v", got, want)
		}
	}
}
