package intake_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/config"
	"github.com/flowedge/flowedge/internal/partition"
	"github.com/flowedge/flowedge/internal/server"
)

// backend is a real HTTP backend with an auth check like api-flow's
// (GET /api/v1/auth/check: 204 for "Bearer good-…" or X-API-Key
// good-…, else 401). It records the checks it answered and every
// request delivered to it; while not ready, the edge keeps what it admits
// queued, so the queue's size is exactly what the guard let through.
type backend struct {
	srv       *httptest.Server
	ready     atomic.Bool
	checks    atomic.Int64
	delivered atomic.Int64

	mu          sync.Mutex
	checkHeader []http.Header
	checkPaths  []string
}

func newBackend(t *testing.T, ready bool) *backend {
	b := &backend{}
	b.ready.Store(ready)
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/health/readiness":
			if !b.ready.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		case strings.HasPrefix(r.URL.Path, "/api/v1/auth/check"):
			b.checks.Add(1)
			b.mu.Lock()
			b.checkHeader = append(b.checkHeader, r.Header.Clone())
			b.checkPaths = append(b.checkPaths, r.URL.Path)
			b.mu.Unlock()
			if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer good-") || strings.HasPrefix(r.Header.Get("X-API-Key"), "good-") {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("WWW-Authenticate", `Bearer realm="flow"`)
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"title":"Unauthorized","status":401,"detail":"invalid API key (from the backend)"}`)
		default:
			b.delivered.Add(1)
			w.WriteHeader(http.StatusCreated)
		}
	}))
	t.Cleanup(b.srv.Close)
	return b
}

func startEdge(t *testing.T, tune func(*config.Config), bs ...*backend) *server.Edge {
	t.Helper()
	cfg := config.Default()
	cfg.Server.Address, cfg.Admin.Address = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Server.Respond = config.RespondAccept
	cfg.Partition.Count = len(bs)
	cfg.Backends.URLs = nil
	for _, b := range bs {
		cfg.Backends.URLs = append(cfg.Backends.URLs, b.srv.URL)
	}
	cfg.Backends.ProbeInterval = config.Duration{Duration: 50 * time.Millisecond}
	cfg.Buffer.Path = t.TempDir()
	tune(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e, err := server.Start(context.Background(), cfg, nil, "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	return e
}

type answer struct {
	status     int
	deliveryID string
	retryAfter string
	wwwAuth    string
	body       string
}

func send(t *testing.T, e *server.Edge, method, key string, hdr map[string]string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+e.PublicAddr+"/api/v1/processes/"+key+"/events", strings.NewReader(`{"type":"x"}`))
	req.Header.Set("X-Process-ID", key)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header.Get("X-Delivery-ID"), resp.Header.Get("Retry-After"), resp.Header.Get("WWW-Authenticate"), string(body)}
}

// queued is the number of records waiting in the edge (admin API).
func queued(t *testing.T, e *server.Edge) int {
	t.Helper()
	resp, err := http.Get("http://" + e.AdminAddr + "/edge/v1/partitions")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		Partitions []struct {
			Queued int `json:"queued"`
		} `json:"partitions"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range v.Partitions {
		n += p.Queued
	}
	return n
}

// refused reads edge_intake_refused_total{reason} from the admin /metrics.
func refused(t *testing.T, e *server.Edge, reason string) string {
	t.Helper()
	resp, err := http.Get("http://" + e.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	prefix := `edge_intake_refused_total{reason="` + reason + `"} `
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, prefix) {
			return strings.TrimPrefix(l, prefix)
		}
	}
	return ""
}

func keyOn(p, n int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("proc-%d", i); partition.OfString(k, n) == p {
			return k
		}
	}
}

// TestForwardAuthRefusesBadKeyAtIntake: with [auth] check_url on, a
// request with a bad key (or none) is answered 401 by the edge with the
// backend's own answer (status, WWW-Authenticate, body), gets no delivery
// id, and nothing is stored or delivered; a good key is stored. The check
// carries the client's credentials only, "{N}" is the request's partition,
// and a verdict is cached per credential.
func TestForwardAuthRefusesBadKeyAtIntake(t *testing.T) {
	b0, b1 := newBackend(t, false), newBackend(t, false) // not ready: what is admitted stays queued
	e := startEdge(t, func(c *config.Config) {
		c.Auth.CheckURL = b0.srv.URL + "/api/v1/auth/check/{N}"
		c.Auth.CacheTTL = config.Duration{Duration: time.Hour}
	}, b0, b1)
	k1 := keyOn(1, 2)

	a := send(t, e, http.MethodPost, k1, map[string]string{"Authorization": "Bearer bad-key", "Cookie": "c=1", "X-Other": "o"})
	if a.status != http.StatusUnauthorized || a.deliveryID != "" || !strings.Contains(a.body, "from the backend") || a.wwwAuth == "" {
		t.Fatalf("bad key: %+v, want the check's 401 relayed, no delivery id", a)
	}
	if a := send(t, e, http.MethodPost, k1, nil); a.status != http.StatusUnauthorized || a.deliveryID != "" {
		t.Fatalf("no key: %+v, want 401", a)
	}
	if n := queued(t, e); n != 0 {
		t.Fatalf("%d records queued after refused requests, want 0", n)
	}
	b0.mu.Lock()
	h, path := b0.checkHeader[0], b0.checkPaths[0]
	b0.mu.Unlock()
	if h.Get("Authorization") != "Bearer bad-key" || h.Get("Cookie") != "" || h.Get("X-Other") != "" || h.Get("X-Process-ID") != "" {
		t.Errorf("the check got headers %v, want the credentials only", h)
	}
	if path != "/api/v1/auth/check/1" {
		t.Errorf("check path %q, want {N} = 1 (the key's partition)", path)
	}

	checks := b0.checks.Load()
	for range 3 {
		if a := send(t, e, http.MethodPost, k1, map[string]string{"Authorization": "Bearer bad-key"}); a.status != http.StatusUnauthorized {
			t.Fatalf("repeated bad key: %+v", a)
		}
	}
	if b0.checks.Load() != checks {
		t.Errorf("a cached verdict was asked again (%d checks, want %d)", b0.checks.Load(), checks)
	}

	for i, hdr := range []map[string]string{{"Authorization": "Bearer good-key"}, {"X-API-Key": "good-key"}} {
		if a := send(t, e, http.MethodPost, k1, hdr); a.status != http.StatusAccepted || a.deliveryID == "" {
			t.Fatalf("good key %d: %+v, want 202 with a delivery id", i, a)
		}
	}
	if n := queued(t, e); n != 2 {
		t.Fatalf("%d records queued, want the 2 admitted ones", n)
	}
	if got := refused(t, e, "auth"); got != "5" {
		t.Errorf(`edge_intake_refused_total{reason="auth"} = %q, want 5`, got)
	}
	// Reads are not stored, so not guarded: proxied as they are (to a
	// backend not ready yet: 503 from the edge, not the check's 401).
	checks = b0.checks.Load()
	if a := send(t, e, http.MethodGet, k1, nil); a.status == http.StatusUnauthorized || b0.checks.Load() != checks {
		t.Errorf("a proxied read went through the guard: %+v", a)
	}
	b1.ready.Store(true)
	// Wait until the queue is empty rather than sleep after the second
	// delivery: a refused request, had it been stored, has then arrived too.
	deadline := time.Now().Add(10 * time.Second)
	for b1.delivered.Load() < 2 || queued(t, e) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("admitted requests not delivered (%d)", b1.delivered.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := b1.delivered.Load(); n != 2 {
		t.Errorf("backend got %d writes, want the 2 admitted ones", n)
	}
}

// TestForwardAuthWhenCheckIsDown: when the check cannot be reached, a
// cached verdict still applies (even past its TTL); otherwise when_down =
// "admit" stores the request and "reject" answers 503 with Retry-After and
// stores nothing.
func TestForwardAuthWhenCheckIsDown(t *testing.T) {
	for _, mode := range []string{config.WhenDownAdmit, config.WhenDownReject} {
		t.Run(mode, func(t *testing.T) {
			b := newBackend(t, false)
			check := newBackend(t, true)
			e := startEdge(t, func(c *config.Config) {
				c.Auth.CheckURL = check.srv.URL + "/api/v1/auth/check"
				c.Auth.CacheTTL = config.Duration{Duration: 10 * time.Millisecond}
				c.Auth.WhenDown = mode
			}, b)
			if a := send(t, e, http.MethodPost, "p", map[string]string{"Authorization": "Bearer good-key"}); a.status != http.StatusAccepted {
				t.Fatalf("good key while the check is up: %+v", a)
			}
			if a := send(t, e, http.MethodPost, "p", map[string]string{"Authorization": "Bearer bad-key"}); a.status != http.StatusUnauthorized {
				t.Fatalf("bad key while the check is up: %+v", a)
			}
			check.srv.Close()
			time.Sleep(20 * time.Millisecond) // past the TTL: the verdicts are stale now
			if a := send(t, e, http.MethodPost, "p", map[string]string{"Authorization": "Bearer good-key"}); a.status != http.StatusAccepted {
				t.Errorf("good key, check down, stale verdict: %+v, want 202", a)
			}
			if a := send(t, e, http.MethodPost, "p", map[string]string{"Authorization": "Bearer bad-key"}); a.status != http.StatusUnauthorized {
				t.Errorf("bad key, check down, stale verdict: %+v, want 401", a)
			}
			a := send(t, e, http.MethodPost, "p", map[string]string{"Authorization": "Bearer never-seen"})
			want := 2
			if mode == config.WhenDownAdmit {
				want = 3
				if a.status != http.StatusAccepted {
					t.Errorf("unknown key, check down, admit: %+v, want 202", a)
				}
			} else if a.status != http.StatusServiceUnavailable || a.retryAfter == "" || a.deliveryID != "" {
				t.Errorf("unknown key, check down, reject: %+v, want 503 with Retry-After", a)
			}
			if n := queued(t, e); n != want {
				t.Errorf("%d queued, want %d", n, want)
			}
		})
	}
}

// TestIntakeLimitPerClient: with [intake] rate, a client over its bucket
// gets 429 with Retry-After and nothing is stored, while another client is
// unaffected: two credentials the check admitted keep a bucket each even
// from one IP (only the first request of each, not yet verified, also
// costs the IP's bucket), and anonymous requests use the IP's bucket.
func TestIntakeLimitPerClient(t *testing.T) {
	b := newBackend(t, false)
	e := startEdge(t, func(c *config.Config) {
		c.Auth.CheckURL = b.srv.URL + "/api/v1/auth/check"
		c.Intake.Rate = "1/h" // no refill within the test
		c.Intake.Burst = 3
	}, b)
	alice := map[string]string{"Authorization": "Bearer good-alice"}
	bob := map[string]string{"X-API-Key": "good-bob"}
	for _, c := range []struct {
		name string
		hdr  map[string]string
	}{{"alice", alice}, {"bob", bob}} {
		for i := range 3 {
			if a := send(t, e, http.MethodPost, "p", c.hdr); a.status != http.StatusAccepted {
				t.Fatalf("%s %d: %+v", c.name, i, a)
			}
		}
		a := send(t, e, http.MethodPost, "p", c.hdr)
		if a.status != http.StatusTooManyRequests || a.deliveryID != "" {
			t.Fatalf("%s over the limit: %+v, want 429 and no delivery id", c.name, a)
		}
		if s, err := strconv.Atoi(a.retryAfter); err != nil || s < 1 {
			t.Errorf("Retry-After %q, want whole seconds >= 1", a.retryAfter)
		}
	}
	// The IP's bucket paid for alice's and bob's first requests: one left
	// (the check then refuses the anonymous request).
	if a := send(t, e, http.MethodPost, "p", nil); a.status != http.StatusUnauthorized {
		t.Fatalf("anonymous within the IP's bucket: %+v, want 401 from the check", a)
	}
	if a := send(t, e, http.MethodPost, "p", nil); a.status != http.StatusTooManyRequests {
		t.Errorf("anonymous over the limit of its IP: %+v, want 429", a)
	}
	if n := queued(t, e); n != 6 {
		t.Errorf("%d queued, want 6 (3 per credential; refused ones not stored)", n)
	}
	if got := refused(t, e, "rate"); got != "3" {
		t.Errorf(`edge_intake_refused_total{reason="rate"} = %q, want 3`, got)
	}
}

// TestIntakeRotatingCredentialsLimitedByIP pins a rate-limit bypass: the
// guard kept a bucket per credential hash, so a client sending a new random
// Authorization or X-API-Key on every request got a fresh bucket each time
// and was never limited. A credential the check has not admitted (or any
// credential when there is no check) is charged to its IP's bucket too.
func TestIntakeRotatingCredentialsLimitedByIP(t *testing.T) {
	for _, withCheck := range []bool{false, true} {
		t.Run(fmt.Sprintf("check=%v", withCheck), func(t *testing.T) {
			b := newBackend(t, false)
			e := startEdge(t, func(c *config.Config) {
				if withCheck {
					c.Auth.CheckURL = b.srv.URL + "/api/v1/auth/check"
				}
				c.Intake.Rate = "1/h" // no refill within the test
				c.Intake.Burst = 3
			}, b)
			want := http.StatusAccepted
			if withCheck {
				want = http.StatusUnauthorized // random keys: the check refuses them
			}
			for i := range 3 {
				hdr := map[string]string{"Authorization": fmt.Sprintf("Bearer random-%d", i)}
				if a := send(t, e, http.MethodPost, "p", hdr); a.status != want {
					t.Fatalf("credential %d: %+v, want %d", i, a, want)
				}
			}
			for i := 3; i < 6; i++ {
				hdr := map[string]string{"X-API-Key": fmt.Sprintf("random-%d", i)}
				if a := send(t, e, http.MethodPost, "p", hdr); a.status != http.StatusTooManyRequests {
					t.Fatalf("rotated credential %d after the IP's burst: %+v, want 429", i, a)
				}
			}
			if got := refused(t, e, "rate"); got != "3" {
				t.Errorf(`edge_intake_refused_total{reason="rate"} = %q, want 3`, got)
			}
		})
	}
}
