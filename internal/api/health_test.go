package api_test

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api"
)

func keysOf(m map[string]any) []string {
	var k []string
	for key := range m {
		k = append(k, key)
	}
	sort.Strings(k)
	return k
}

func sameKeys(t *testing.T, what string, m map[string]any, want ...string) {
	t.Helper()
	sort.Strings(want)
	got := keysOf(m)
	if len(got) != len(want) {
		t.Fatalf("%s has members %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s has members %v, want %v", what, got, want)
		}
	}
}

// TestHealthJSON checks /health/health and /api/v1/health field by field
// against docs/production.md:
// {"status","timestamp":<unix ms>,"version","checks":{"database":{"status","latency"},"storage":{"status"},"queue":{"status"}}}.
func TestHealthJSON(t *testing.T) {
	e := newEnv(t)
	for _, path := range []string{"/health/health", "/api/v1/health"} {
		before := time.Now().UnixMilli()
		r := must(t, e.do(req{method: "GET", path: path}), 200)
		after := time.Now().UnixMilli()
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("%s: Content-Type %q", path, ct)
		}
		var h map[string]any
		r.json(t, &h)
		sameKeys(t, path, h, "status", "timestamp", "version", "checks")
		if h["status"] != "healthy" {
			t.Fatalf("%s: status %v", path, h["status"])
		}
		ts, ok := h["timestamp"].(float64)
		if !ok || int64(ts) < before || int64(ts) > after || ts != float64(int64(ts)) {
			t.Fatalf("%s: timestamp %v is not unix ms in [%d, %d]", path, h["timestamp"], before, after)
		}
		if h["version"] != "test-1.0" {
			t.Fatalf("%s: version %v", path, h["version"])
		}
		checks := h["checks"].(map[string]any)
		sameKeys(t, path+" checks", checks, "database", "storage", "queue")
		db := checks["database"].(map[string]any)
		sameKeys(t, path+" database", db, "status", "latency")
		if lat, ok := db["latency"].(float64); db["status"] != "ok" || !ok || lat < 0 || lat != float64(int64(lat)) {
			t.Fatalf("%s: database %v", path, db)
		}
		for _, name := range []string{"storage", "queue"} {
			c := checks[name].(map[string]any)
			sameKeys(t, path+" "+name, c, "status")
			if c["status"] != "ok" {
				t.Fatalf("%s: %s %v", path, name, c)
			}
		}
	}
}

// TestReadinessStoreClosed: readiness is 200 while the store answers and
// 503 once it is closed; /health/health is then unhealthy with 503.
func TestReadinessStoreClosed(t *testing.T) {
	e := newEnv(t)
	must(t, e.do(req{method: "GET", path: "/health/readiness"}), 200)
	if err := e.store.Close(); err != nil {
		t.Fatal(err)
	}
	checkProblem(t, e.do(req{method: "GET", path: "/health/readiness"}), 503)
	var h api.HealthReport
	must(t, e.do(req{method: "GET", path: "/health/health"}), 503).json(t, &h)
	if h.Status != "unhealthy" || h.Checks.Database.Status != "error" || h.Checks.Database.Error == "" {
		t.Fatalf("health with a closed store: %+v", h)
	}
	must(t, e.do(req{method: "GET", path: "/health/liveness"}), 200)
}

// TestHealthHangingStorage: a storage check that hangs (and ignores its
// context) does not hang /health/health: it answers degraded, every time
// (the check's timeout is DefaultCheckTimeout, 50 ms; the test waits up to
// 10 s only to tell a bounded answer from a hung one on a loaded machine,
// and asserts no duration).
func TestHealthHangingStorage(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, func(o *api.Options) {
		o.Health.Storage = func(context.Context) error { <-release; return nil }
		o.Health.StorageTimeout = 0 // the product's default, not the test environment's 5 s
	})
	t.Cleanup(func() { close(release) }) // ends the hung check goroutines
	for i := range 3 {
		done := tryAsync(e, req{method: "GET", path: "/health/health"})
		var res tryResult
		select {
		case res = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("call %d: /health/health hangs with a hanging storage check", i)
		}
		if res.err != nil {
			t.Fatal(res.err)
		}
		var h api.HealthReport
		must(t, res.r, 200).json(t, &h)
		if h.Status != "degraded" || h.Checks.Storage.Status != "error" || h.Checks.Database.Status != "ok" || h.Checks.Queue.Status != "ok" {
			t.Fatalf("call %d: %+v", i, h)
		}
	}
	must(t, e.do(req{method: "GET", path: "/health/readiness"}), 200) // storage is not readiness
}

// TestReadinessOutwaitsHealth: /health/readiness waits for the database
// check up to HealthOptions.ReadinessTimeout, longer than /health/health
// waits: a store slower than the report's timeout makes the report
// unhealthy but the backend still ready, so a moment's slowness does not
// pause the edge's partition. The check runs with the longer deadline.
func TestReadinessOutwaitsHealth(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	e := newEnv(t, func(o *api.Options) {
		o.Health.Database = func(ctx context.Context) error {
			select {
			case started <- struct{}{}:
			default:
			}
			select {
			case <-release:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		o.Health.DatabaseTimeout = 0 // the product's default, 50 ms
		o.Health.ReadinessTimeout = time.Minute
	})
	t.Cleanup(unblock) // before the server stops, which waits for the request
	ready := tryAsync(e, req{method: "GET", path: "/health/readiness"})
	select {
	case <-started: // readiness started the run, so it has waited at least as long as the report below
	case <-time.After(20 * time.Second):
		t.Fatal("the readiness request never ran the database check")
	}
	var h api.HealthReport
	must(t, e.do(req{method: "GET", path: "/health/health"}), 503).json(t, &h)
	if h.Checks.Database.Status != "error" || !strings.Contains(h.Checks.Database.Error, "no answer within") {
		t.Fatalf("report while the database check hangs: %+v", h)
	}
	unblock()
	var res tryResult
	select {
	case res = <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("readiness did not answer once the check did")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	must(t, res.r, 200)
}

// TestHealthFailures: a failing queue check degrades (200); a failing
// database check makes the service unhealthy (503) and not ready.
func TestHealthFailures(t *testing.T) {
	e := newEnv(t, func(o *api.Options) {
		o.Health.Queue = func(context.Context) error { return errors.New("queue stuck") }
	})
	var h api.HealthReport
	must(t, e.do(req{method: "GET", path: "/health/health"}), 200).json(t, &h)
	if h.Status != "degraded" || h.Checks.Queue.Status != "error" || h.Checks.Queue.Error != "queue stuck" {
		t.Fatalf("%+v", h)
	}

	e2 := newEnv(t, func(o *api.Options) {
		o.Health.Database = func(context.Context) error { return errors.New("db down") }
	})
	must(t, e2.do(req{method: "GET", path: "/health/health"}), 503).json(t, &h)
	if h.Status != "unhealthy" || h.Checks.Database.Status != "error" {
		t.Fatalf("%+v", h)
	}
	checkProblem(t, e2.do(req{method: "GET", path: "/health/readiness"}), 503)
}

// TestDrain: after Drain readiness is 503 while liveness stays 200.
func TestDrain(t *testing.T) {
	e := newEnv(t)
	must(t, e.do(req{method: "GET", path: "/health/liveness"}), 200)
	must(t, e.do(req{method: "GET", path: "/health/readiness"}), 200)
	e.srv.Drain()
	checkProblem(t, e.do(req{method: "GET", path: "/health/readiness"}), 503)
	must(t, e.do(req{method: "GET", path: "/health/liveness"}), 200)
}

// tryResult is what e.try returned.
type tryResult struct {
	r   resp
	err error
}

// tryAsync sends r from a goroutine of its own and hands back the result,
// so the caller can bound its wait.
func tryAsync(e *env, r req) <-chan tryResult {
	done := make(chan tryResult, 1)
	go func() {
		resp, err := e.try(r)
		done <- tryResult{resp, err}
	}()
	return done
}
