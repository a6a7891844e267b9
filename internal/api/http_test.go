package api_test

import (
	"encoding/json"
	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"strings"
	"testing"
)

// TestProblems: routing and limit errors are problem+json too, and every
// answer carries the security headers and X-Request-ID.
func TestProblems(t *testing.T) {
	e := newEnv(t)
	checkProblem(t, e.do(req{method: "GET", path: "/nope", key: adminKey}), 404)
	checkProblem(t, e.do(req{method: "PUT", path: "/api/v1/apps", key: adminKey}), 405)
	r := e.do(req{method: "PATCH", path: "/jobs", key: adminKey})
	checkProblem(t, r, 405)
	if r.header.Get("Allow") == "" {
		t.Fatal("405 without Allow")
	}
	big := `{"x":"` + strings.Repeat("a", 1<<20) + `"}`
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/processes/p/events", key: adminKey, body: big}), 413)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/apps?q=" + strings.Repeat("a", 1100), key: adminKey}), 414)
	checkProblem(t, e.do(req{method: "GET", path: "/api/v1/" + strings.Repeat("a", 2100), key: adminKey}), 414)

	r = e.do(req{method: "GET", path: "/health/liveness", header: map[string]string{"X-Request-ID": "trace-123"}})
	want := map[string]string{
		"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "X-XSS-Protection": "1; mode=block",
		"Referrer-Policy": "strict-origin-when-cross-origin", "X-Request-ID": "trace-123",
	}
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Fatalf("%s: %q, want %q", k, got, v)
		}
	}
	if r.header.Get("Strict-Transport-Security") != "" {
		t.Fatal("HSTS in development")
	}
}

// TestMetricsOffPublicPort: the public handler has no /metrics (it listed
// every tenant's webhook hosts to anyone who could reach the edge's public
// port); the metrics handler's output passes Prometheus' linter.
func TestMetricsOffPublicPort(t *testing.T) {
	e := newEnv(t)
	must(t, e.do(appendReq("proc-m", "m-1", map[string]any{"a": 1})), 201)
	for _, h := range []map[string]string{nil, {"X-Process-ID": "proc-m"}} {
		if r := e.do(req{method: "GET", path: "/metrics", header: h}); r.status != 404 {
			t.Fatalf("public GET /metrics = %v, want 404", r)
		}
	}
	problems, err := promtestutil.GatherAndLint(e.opts.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	body := e.metrics()
	lintProblems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range lintProblems {
		t.Errorf("lint of the served text: %s: %s", p.Metric, p.Text)
	}
}

// TestMetrics: /metrics serves the flow_ metrics on the injected registry.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	must(t, e.do(appendReq("proc-m", "m-1", map[string]any{"a": 1})), 201)
	must(t, e.do(appendReq("proc-m", "m-1", map[string]any{"a": 1})), 201)
	body := e.metrics()
	for _, want := range []string{
		`flow_http_requests_total{code="201",method="POST",route="/api/v1/processes/{pid}/events"} 2`,
		`flow_events_appended_total 1`,
		`flow_idempotent_replays_total 1`,
		`flow_job_queue_depth 0`,
		`flow_jobs_running 0`,
		`flow_build_info{partition="0",partitions="1",version="test-1.0"} 1`,
		`flow_http_request_duration_seconds_bucket`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	mfs, err := e.opts.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "flow_") && !strings.HasPrefix(mf.GetName(), "go_") && !strings.HasPrefix(mf.GetName(), "process_") {
			t.Errorf("unexpected metric %s", mf.GetName())
		}
	}
}

// TestRequestLog: each request is one JSON log line with its request id,
// method, path, status, duration and key id.
func TestRequestLog(t *testing.T) {
	e := newEnv(t)
	must(t, e.do(appendReq("proc-log", "log-rid-1", map[string]any{"a": 1})), 201)
	var keyID string
	var found map[string]any
	for _, line := range strings.Split(e.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if m["msg"] == "created the bootstrap API key" {
			keyID, _ = m["key_id"].(string)
		}
		if m["msg"] == "request" && m["request_id"] == "log-rid-1" {
			found = m
		}
	}
	if found == nil {
		t.Fatalf("no request line in:\n%s", e.logs.String())
	}
	if found["method"] != "POST" || found["path"] != "/api/v1/processes/proc-log/events" || found["status"] != float64(201) ||
		found["key_id"] != keyID || keyID == "" || found["process_id"] != "proc-log" {
		t.Fatalf("request line %v (key %s)", found, keyID)
	}
	if d, ok := found["duration_ms"].(float64); !ok || d < 0 {
		t.Fatalf("duration_ms %v", found["duration_ms"])
	}
}
