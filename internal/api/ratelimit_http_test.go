package api_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api"
)

// manualClock is a clock tests move by hand; safe for the server's
// goroutines.
type manualClock struct {
	mu sync.Mutex
	t  time.Time
}

func newManualClock() *manualClock {
	return &manualClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// limitedEnv is a server with the default rate limits on a manual clock.
func limitedEnv(t *testing.T) (*env, *manualClock) {
	clock := newManualClock()
	e := newEnv(t, func(o *api.Options) { o.RateLimits = api.RateLimits{Now: clock.Now} })
	return e, clock
}

// checkRateHeaders checks the RateLimit-* headers of r.
func checkRateHeaders(t *testing.T, r resp, limit, remaining int) {
	t.Helper()
	if got := r.header.Get("RateLimit-Limit"); got != strconv.Itoa(limit) {
		t.Fatalf("RateLimit-Limit %q, want %d", got, limit)
	}
	if got := r.header.Get("RateLimit-Remaining"); got != strconv.Itoa(remaining) {
		t.Fatalf("RateLimit-Remaining %q, want %d", got, remaining)
	}
	if n, err := strconv.Atoi(r.header.Get("RateLimit-Reset")); err != nil || n < 0 || n > 60 {
		t.Fatalf("RateLimit-Reset %q", r.header.Get("RateLimit-Reset"))
	}
}

// checkLimited checks a 429: problem+json, Retry-After of retry seconds and
// the RateLimit-* headers.
func checkLimited(t *testing.T, r resp, limit int, retry string) {
	t.Helper()
	checkProblem(t, r, 429)
	checkRateHeaders(t, r, limit, 0)
	if got := r.header.Get("Retry-After"); got != retry {
		t.Fatalf("Retry-After %q, want %q", got, retry)
	}
}

// TestRateLimitKeys: five key creations a minute per key; the sixth is a
// 429 with Retry-After and RateLimit-*; a token is back after 12 s.
func TestRateLimitKeys(t *testing.T) {
	e, clock := limitedEnv(t)
	create := func() resp {
		return e.do(req{method: "POST", path: "/api/v1/keys", key: adminKey, body: map[string]any{"name": "k"}})
	}
	for i := range 5 {
		checkRateHeaders(t, must(t, create(), 201), 5, 4-i)
	}
	checkLimited(t, create(), 5, "12")
	// Other routes draw from the default bucket.
	checkRateHeaders(t, must(t, e.do(req{method: "GET", path: "/api/v1/keys", key: adminKey}), 200), 100, 99)
	clock.Add(11 * time.Second)
	checkLimited(t, create(), 5, "1")
	clock.Add(time.Second)
	checkRateHeaders(t, must(t, create(), 201), 5, 0)
}

// TestRateLimitPosts: thirty posts a minute per key; the 31st is a 429.
func TestRateLimitPosts(t *testing.T) {
	e, _ := limitedEnv(t)
	ch := e.channel(adminKey, "busy")
	path := "/api/v1/channels/" + ch.ID + "/posts"
	for i := range 30 {
		checkRateHeaders(t, must(t, e.do(req{method: "POST", path: path, key: adminKey, body: map[string]any{"content": "p"}}), 201), 30, 29-i)
	}
	checkLimited(t, e.do(req{method: "POST", path: path, key: adminKey, body: map[string]any{"content": "p"}}), 30, "2")
	// Reading the posts is not a post creation.
	must(t, e.do(req{method: "GET", path: path, key: adminKey}), 200)
}

// TestRateLimitDefault: a hundred requests a minute per key on other
// routes; other keys are not affected; unauthenticated routes carry no
// limit.
func TestRateLimitDefault(t *testing.T) {
	e, clock := limitedEnv(t)
	other, _ := e.newKey("other", "", "") // draws from the keys bucket
	for i := range 100 {
		checkRateHeaders(t, must(t, e.do(req{method: "GET", path: "/api/v1/apps", key: adminKey}), 200), 100, 99-i)
	}
	checkLimited(t, e.do(req{method: "GET", path: "/api/v1/apps", key: adminKey}), 100, "1")
	// Refused before anything else: a bad id is still a 429.
	checkLimited(t, e.do(req{method: "GET", path: "/api/v1/apps/nope", key: adminKey}), 100, "1")
	checkRateHeaders(t, must(t, e.do(req{method: "GET", path: "/api/v1/apps", key: other}), 200), 100, 99)
	r := must(t, e.do(req{method: "GET", path: "/health/liveness"}), 200)
	if r.header.Get("RateLimit-Limit") != "" {
		t.Fatal("rate limit headers on a public route")
	}
	clock.Add(time.Minute)
	checkRateHeaders(t, must(t, e.do(req{method: "GET", path: "/api/v1/apps", key: adminKey}), 200), 100, 99)
}

// TestRateLimitWebhooks: ten webhook creations a minute per key; the 11th
// is a 429. The creations and a deletion are audited.
func TestRateLimitWebhooks(t *testing.T) {
	e, _ := limitedEnv(t)
	create := func() resp {
		return e.do(req{method: "POST", path: "/api/v1/webhooks", key: adminKey,
			body: map[string]any{"url": "https://hooks.example.com/flow", "events": []string{"post.created"}}})
	}
	var first struct{ ID string }
	must(t, create(), 201).json(t, &first)
	for i := 1; i < 10; i++ {
		checkRateHeaders(t, must(t, create(), 201), 10, 9-i)
	}
	checkLimited(t, create(), 10, "6")
	must(t, e.do(req{method: "DELETE", path: "/api/v1/webhooks/" + first.ID, key: adminKey}), 204)
	deletes, _ := e.auditPage("?action=webhook.delete")
	creates, _ := e.auditPage("?action=webhook.create")
	if len(deletes) != 1 || deletes[0].ResourceID != first.ID || len(creates) != 10 || creates[9].ResourceID != first.ID {
		t.Fatalf("audit: %d deletes %+v, %d creates", len(deletes), deletes, len(creates))
	}
}
