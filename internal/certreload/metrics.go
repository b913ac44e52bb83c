package certreload

import "github.com/prometheus/client_golang/prometheus"

// expiryDesc is the expiry gauge: one series per use, so that an operator alerts on a
// certificate that was not renewed in time (for example on
// imago_tls_certificate_expiry_timestamp_seconds - time() < 7*86400).
var expiryDesc = prometheus.NewDesc("imago_tls_certificate_expiry_timestamp_seconds",
	"When the TLS certificate in use expires (its NotAfter), in unix seconds, by use (http, protocol, raft); a renewed certificate shows here once it is in use.",
	[]string{"use"}, nil)

// expiryCollector reports each Reloader's NotAfter at scrape time.
type expiryCollector struct{ rs []*Reloader }

// ExpiryCollector is the imago_tls_certificate_expiry_timestamp_seconds{use} gauge of rs. A
// scrape is a use: it looks at the files (at most once per Interval, as a handshake does), so
// the gauge follows a renewal even on a door nobody connects to.
func ExpiryCollector(rs ...*Reloader) prometheus.Collector {
	return expiryCollector{rs: rs}
}

func (c expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (c expiryCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.rs {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(r.NotAfter().Unix()), r.Use())
	}
}
