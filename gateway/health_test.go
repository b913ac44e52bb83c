package gateway

import (
	"net/http"
	"strings"
	"testing"

	"github.com/imagomq/imago/api"
)

// TestMetrics checks the metric families /metrics exposes after some traffic.
func TestMetrics(t *testing.T) {
	ts := startServer(t, Options{})
	ts.createTopic("m", 2)
	ts.produce("m", `{"messages":[{"value":1,"partition":1},{"value":2,"partition":1}]}`)
	ts.fetch("m", 1, "offset=0")
	ts.do("GET", "/nope", "")
	body := string(ts.must(http.StatusOK, "GET", "/metrics", "").body)
	for _, want := range []string{
		`imago_partition_end_offset{partition="1",topic="m"} 2`,
		`imago_partition_start_offset{partition="0",topic="m"} 0`,
		`imago_http_requests_total{code="200",route="/v1/topics/{topic}/messages"} 1`,
		`imago_http_requests_total{code="404",route="unmatched"} 1`,
		`imago_http_request_duration_seconds_bucket{route="/v1/topics/{topic}/partitions/{partition}/messages",le="+Inf"} 1`,
		`imago_http_request_bytes_total{route="/v1/topics/{topic}/messages"}`,
		`imago_http_response_bytes_total{route="/v1/topics/{topic}/partitions/{partition}/messages"}`,
		`imago_flush_messages_count`,
		`imago_fsync_duration_seconds_count`,
		`imago_broker_messages_in_total `,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestHealthEndpoints: /v1/stats, /healthz, /readyz and /openapi.yaml answer.
func TestHealthEndpoints(t *testing.T) {
	ts := startServer(t, Options{Version: "v0.0.0-test"})
	ts.createTopic("s", 3)
	ts.produce("s", `{"messages":[{"value":1}]}`)
	var st api.Stats
	decodeJSON(t, ts.must(http.StatusOK, "GET", "/v1/stats", "").body, &st)
	if st.Version != "v0.0.0-test" || st.Topics != 1 || st.Partitions != 3 {
		t.Fatalf("stats %+v", st)
	}
	var s api.Status
	decodeJSON(t, ts.must(http.StatusOK, "GET", "/healthz", "").body, &s)
	decodeJSON(t, ts.must(http.StatusOK, "GET", "/readyz", "").body, &s)
	if s.Status != "ready" {
		t.Fatalf("readyz %+v", s)
	}
}
