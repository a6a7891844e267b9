package server

import (
	"net/http"
	"strings"
	"testing"
)

// TestMetricNames: the admin scrape carries every metric docs/edge.md names,
// so dashboards and alerts can rely on them. Regression: the delivery
// counter was bumped after the client got its answer, so a scrape right
// after the answer could miss the delivery (seen in CI).
func TestMetricNames(t *testing.T) {
	b := newBackend(t, "b0")
	e := startEdge(t, testConfig(t, b))
	readBody(t, send(t, e, "POST", "/x", "k", "k:1", nil))
	resp, err := client.Get("http://" + e.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body := readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	for _, name := range []string{
		"edge_http_requests_total{", "edge_http_request_duration_seconds_bucket{",
		"edge_buffer_records{", "edge_buffer_bytes ", "edge_buffer_oldest_age_seconds{",
		"edge_delivery_attempts_total{", "edge_deliveries_total{", "edge_delivery_latency_seconds_bucket{",
		"edge_backend_ready{", "edge_breaker_open{", "edge_dead_letters{",
		"go_goroutines ", "process_resident_memory_bytes ",
	} {
		if !strings.Contains(body, "\n"+name) {
			t.Errorf("/metrics lacks %s", strings.TrimRight(name, "{ "))
		}
	}
	if !strings.Contains(body, `edge_deliveries_total{partition="0",result="delivered"} 1`) {
		t.Error("the delivered request is not counted")
	}
}
