package api_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api"
)

// TestBodyLimit: a body of exactly api.MaxBodyBytes (1 MiB) is accepted and
// one byte more is a 413, with a declared length and chunked.
func TestBodyLimit(t *testing.T) {
	e := newEnv(t)
	body := func(n int) []byte {
		const head, tail = `{"x":"`, `"}`
		return []byte(head + strings.Repeat("a", n-len(head)-len(tail)) + tail)
	}
	exact, over := body(api.MaxBodyBytes), body(api.MaxBodyBytes+1)
	if len(exact) != 1<<20 {
		t.Fatalf("body of %d bytes", len(exact))
	}
	must(t, e.do(req{method: "POST", path: "/api/v1/processes/big/events", key: adminKey, body: exact}), 201)
	checkProblem(t, e.do(req{method: "POST", path: "/api/v1/processes/big/events", key: adminKey, body: over}), 413)

	chunked := func(b []byte) resp {
		// An io.Reader of unknown length: the client sends it chunked, so
		// the server learns the size only by reading.
		hr, err := http.NewRequest("POST", e.ts.URL+"/api/v1/processes/big/events", io.MultiReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatal(err)
		}
		hr.Header.Set("Authorization", "Bearer "+adminKey)
		res, err := e.client.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		rb, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		if hr.ContentLength != 0 {
			t.Fatalf("request declared a length: %d", hr.ContentLength)
		}
		return resp{status: res.StatusCode, header: res.Header, body: rb}
	}
	must(t, chunked(exact), 201)
	checkProblem(t, chunked(over), 413)
}

// TestURLLimits: a request target of 2048 bytes passes the URL limit and
// 2049 is a 414; a query string of 1024 bytes passes and 1025 is a 414.
func TestURLLimits(t *testing.T) {
	e := newEnv(t)
	path := func(n int) string { return "/nope/" + strings.Repeat("a", n-len("/nope/")) }
	checkProblem(t, e.do(req{method: "GET", path: path(api.MaxURLBytes), key: adminKey}), 404)
	checkProblem(t, e.do(req{method: "GET", path: path(api.MaxURLBytes + 1), key: adminKey}), 414)

	query := func(n int) string { return "/api/v1/apps?q=" + strings.Repeat("a", n-len("q=")) }
	must(t, e.do(req{method: "GET", path: query(api.MaxQuery), key: adminKey}), 200)
	checkProblem(t, e.do(req{method: "GET", path: query(api.MaxQuery + 1), key: adminKey}), 414)
}

// TestUUIDParams: every route with a resource id answers 400 to an id that
// is not a canonical UUID, before looking anything up.
func TestUUIDParams(t *testing.T) {
	e := newEnv(t)
	const typo = "0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5" // one digit short
	for _, r := range []struct{ method, path string }{
		{"GET", "/api/v1/apps/" + typo},
		{"DELETE", "/api/v1/apps/" + typo},
		{"GET", "/api/v1/workflows/" + typo},
		{"DELETE", "/api/v1/workflows/" + typo},
		{"GET", "/jobs/" + typo},
		{"POST", "/jobs/" + typo + "/cancel"},
		{"GET", "/api/v1/keys/" + typo},
		{"DELETE", "/api/v1/keys/" + typo},
		{"GET", "/api/v1/channels/" + typo},
		{"GET", "/api/v1/channels/" + typo + "/posts"},
		{"GET", "/api/v1/channels/0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b/posts/" + typo},
		{"POST", "/api/v1/channels/" + typo + "/posts"},
		{"GET", "/api/v1/apps/0189A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"}, // upper case
		{"GET", "/api/v1/apps/{0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b}"},
		{"GET", "/api/v1/apps/0189a1b2c3d47e5f8a9b0c1d2e3f4a5b"}, // no dashes
	} {
		res := e.do(req{method: r.method, path: r.path, key: adminKey, body: map[string]any{"content": "x"}})
		p := checkProblem(t, res, 400)
		if !strings.Contains(p["detail"].(string), "UUID") {
			t.Errorf("%s %s: %v", r.method, r.path, p["detail"])
		}
	}
	// A process id is the client's key, not a UUID.
	must(t, e.do(req{method: "POST", path: "/api/v1/processes/order-42/events", key: adminKey, body: map[string]any{"a": 1}}), 201)
}

// panicStore is a real store that panics on reads while armed: the only
// way to make a handler panic from outside.
type panicStore struct {
	api.Store
	armed atomic.Bool
}

func (p *panicStore) View(ctx context.Context, fn func(api.Tx) error) error {
	if p.armed.Load() {
		panic("injected fault")
	}
	return p.Store.View(ctx, fn)
}

// TestSecurityHeaders: every answer — success, client error, limit, rate
// limit, preflight, unmatched route, panic — carries the security headers,
// HSTS only in production.
func TestSecurityHeaders(t *testing.T) {
	for _, production := range []bool{false, true} {
		store, err := api.OpenBadger(t.TempDir(), api.BadgerOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ps := &panicStore{Store: store}
		srv, err := api.New(api.Options{Store: ps, BootstrapKey: adminKey, Production: production, Partitions: 2, Partition: 0,
			AppURLs: []string{"https://app.example.com"}, Logger: slog.New(slog.DiscardHandler),
			RateLimits: api.RateLimits{Keys: api.Rate{Count: 1, Per: time.Hour}}})
		if err != nil {
			t.Fatal(err)
		}
		e := &env{t: t, ts: httptest.NewServer(srv.Handler()), client: &http.Client{Timeout: 30 * time.Second}}
		t.Cleanup(func() {
			e.ts.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = srv.Close(ctx)
			_ = store.Close()
		})
		member, _ := e.newKey("m", "", "") // uses the only key creation of the hour
		var app api.App
		must(t, e.do(req{method: "POST", path: "/api/v1/apps", key: adminKey, body: map[string]any{"name": "a"}}), 201).json(t, &app)
		otherPID := "p0"
		for i := 0; ; i++ { // a process of partition 1
			otherPID = "p" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
			if r := e.do(req{method: "GET", path: "/api/v1/processes/" + otherPID, key: adminKey}); r.status == 421 {
				break
			}
		}
		cases := []struct {
			r    req
			want int
		}{
			{req{method: "GET", path: "/health/liveness"}, 200},
			{req{method: "GET", path: "/metrics"}, 404}, // on the metrics listener only
			{req{method: "GET", path: "/api/v1/apps", key: adminKey}, 200},
			{req{method: "POST", path: "/api/v1/apps", key: adminKey, body: map[string]any{"name": "b"}}, 201},
			{req{method: "DELETE", path: "/api/v1/apps/" + app.ID, key: adminKey}, 204},
			{req{method: "GET", path: "/api/v1/apps/nope", key: adminKey}, 400},
			{req{method: "GET", path: "/api/v1/apps"}, 401},
			{req{method: "GET", path: "/api/v1/keys", key: member}, 403},
			{req{method: "GET", path: "/api/v1/apps/" + app.ID, key: adminKey}, 404},
			{req{method: "GET", path: "/no/such/route"}, 404},
			{req{method: "PUT", path: "/api/v1/apps", key: adminKey}, 405},
			{req{method: "OPTIONS", path: "/api/v1/apps"}, 405},
			{req{method: "POST", path: "/api/v1/processes/p/events", key: adminKey, body: strings.Repeat(" ", api.MaxBodyBytes+1)}, 413},
			{req{method: "GET", path: "/" + strings.Repeat("a", api.MaxURLBytes)}, 414},
			{req{method: "GET", path: "/api/v1/apps?" + strings.Repeat("a", api.MaxQuery+1)}, 414},
			{req{method: "GET", path: "/api/v1/processes/" + otherPID, key: adminKey}, 421},
			{req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "k2"}}, 429},
			{req{method: "OPTIONS", path: "/api/v1/apps", header: map[string]string{"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"}}, 204},
			{req{method: "OPTIONS", path: "/api/v1/apps", header: map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}}, 204},
			{req{method: "GET", path: "/api/v1/apps", key: adminKey}, 500}, // the store panics
		}
		for _, c := range cases {
			if c.want == 500 {
				ps.armed.Store(true)
			}
			res := e.do(c.r)
			ps.armed.Store(false)
			if res.status != c.want {
				t.Fatalf("production=%v %s %.60s: status %d, want %d: %s", production, c.r.method, c.r.path, res.status, c.want, res.body)
			}
			want := map[string]string{
				"X-Content-Type-Options": "nosniff",
				"X-Frame-Options":        "DENY",
				"X-XSS-Protection":       "1; mode=block",
				"Referrer-Policy":        "strict-origin-when-cross-origin",
				"Cache-Control":          "no-store",
			}
			if production {
				want["Strict-Transport-Security"] = "max-age=31536000"
			}
			for k, v := range want {
				if got := res.header.Get(k); got != v {
					t.Errorf("production=%v %s %.60s (%d): %s = %q, want %q", production, c.r.method, c.r.path, res.status, k, got, v)
				}
			}
			if !production && res.header.Get("Strict-Transport-Security") != "" {
				t.Errorf("%s %.60s: HSTS outside production", c.r.method, c.r.path)
			}
			if res.header.Get("X-Request-ID") == "" {
				t.Errorf("%s %.60s: no X-Request-ID", c.r.method, c.r.path)
			}
			if c.want >= 400 {
				checkProblem(t, res, c.want)
			}
		}
	}
}

// TestMetricsMethodLabel: the method label of the request metrics takes a
// bounded set of values. A client inventing methods (net/http accepts any
// token) must not create a series per method: each one is memory kept for
// the life of the process and a row in every scrape.
func TestMetricsMethodLabel(t *testing.T) {
	e := newEnv(t)
	for i := range 50 {
		e.do(req{method: fmt.Sprintf("X%dMETHOD", i), path: "/nope"})
	}
	fams, err := e.opts.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]bool{}
	for _, f := range fams {
		if f.GetName() != "flow_http_requests_total" && f.GetName() != "flow_http_request_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" {
					methods[l.GetValue()] = true
				}
			}
		}
	}
	if len(methods) > 10 || methods["X7METHOD"] {
		t.Fatalf("method label values: %v", methods)
	}
	if !methods["other"] {
		t.Fatalf("invented methods not counted as \"other\": %v", methods)
	}
}
