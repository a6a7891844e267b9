package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestHistoryRingIsBoundedAndRates: the history keeps at most size
// samples, oldest first, and turns the delivered counter into a rate per
// partition (the first sample has no rate; a counter that went down, as
// after a restart, gives 0, not a negative rate).
func TestHistoryRingIsBoundedAndRates(t *testing.T) {
	reg := prometheus.NewRegistry()
	queued := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricQueued}, []string{"partition"})
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricDeliveries}, []string{"partition", "result"})
	reg.MustRegister(queued, deliveries)
	h := newHistory(reg, time.Second, 3)
	t0 := time.Unix(1_000_000, 0)
	for i := range 5 {
		queued.WithLabelValues("1").Set(float64(10 * i))
		deliveries.WithLabelValues("1", "delivered").Add(4)
		deliveries.WithLabelValues("1", "dead").Add(100) // not a delivery
		h.sample(t0.Add(time.Duration(i) * 2 * time.Second))
	}
	s := h.samples()
	if len(s) != 3 {
		t.Fatalf("%d samples kept, want 3 (the ring's size)", len(s))
	}
	for i, want := range []float64{20, 30, 40} {
		if got := s[i].Partitions[1].Queued; got != want {
			t.Errorf("sample %d queued = %v, want %v (oldest first)", i, got, want)
		}
		if got := s[i].Partitions[1].DeliveredPerSecond; got != 2 {
			t.Errorf("sample %d rate = %v, want 2 (4 per 2 s)", i, got)
		}
		if len(s[i].Partitions) != 2 || s[i].Partitions[0].Queued != 0 {
			t.Errorf("sample %d partitions = %+v, want partition 0 empty and 1", i, s[i].Partitions)
		}
	}
	fresh := newHistory(reg, time.Second, 3)
	fresh.sample(t0)
	if r := fresh.samples()[0].Partitions[1].DeliveredPerSecond; r != 0 {
		t.Errorf("first sample rate = %v, want 0", r)
	}
}

// TestStatusPageHeadersAndToken: the page and its assets are served to
// anyone (they hold no data) under a strict CSP; the history endpoints,
// like the rest of /edge/v1 and /debug/pprof, need the token.
func TestStatusPageHeadersAndToken(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := &Handler{opt: Options{Token: "tok"}, mux: http.NewServeMux(), hist: newHistory(reg, 0, 0)}
	h.statusRoutes()
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path, token string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, p := range []string{"/", "/ui/app.js", "/ui/style.css"} {
		resp := get(p, "")
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s = %d, want 200", p, resp.StatusCode)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("GET %s CSP = %q, want a strict policy", p, csp)
		}
	}
	if resp := get("/nope", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope = %d, want 404 (only / is the page)", resp.StatusCode)
	}
	for _, p := range []string{"/edge/v1/history", "/edge/v1/history.svg"} {
		if resp := get(p, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without token = %d, want 401", p, resp.StatusCode)
		}
		if resp := get(p, "tok"); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s with token = %d, want 200", p, resp.StatusCode)
		}
	}
}
