package intake

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestFullTablesSweepRarely pins a CPU denial of service: with the limiter
// table (or the verdict cache) full of recent entries, every request from
// a new credential ran a full O(maxEntries) sweep under the guard's one
// mutex that freed a single entry, so a client rotating Authorization
// values made every request of every client wait on 100k-entry scans. A
// sweep of a full table must leave room for many new clients (at most 7/8
// of the limit), so its cost is spread over limit/8 of them.
func TestFullTablesSweepRarely(t *testing.T) {
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(check.Close)
	g := New(Options{CheckURL: check.URL, Rate: 1, Burst: 1})
	g.limit = 80
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	h := g.Wrap(next)
	for i := range g.limit + 1 {
		r := httptest.NewRequest(http.MethodPost, "/x", nil)
		r.Header.Set("Authorization", fmt.Sprintf("Bearer rotating-%d", i))
		r.RemoteAddr = fmt.Sprintf("10.0.%d.%d:1234", i/256, i%256) // an IP each: its bucket is not spent

		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusAccepted {
			t.Fatalf("request %d: %d, want 202", i, w.Code)
		}
	}
	g.mu.Lock()
	nb, nv := len(g.buckets), len(g.verdicts)
	g.mu.Unlock()
	// A request of a credential not yet verified adds two buckets (its
	// IP's and its own), so the table may be one over what a sweep leaves.
	if want := g.limit*7/8 + 1; nb > want+1 || nv > want {
		t.Fatalf("after overflowing a table of %d: %d buckets, %d verdicts; a sweep must leave at most %d",
			g.limit, nb, nv, want)
	}
}

// TestCheckRedirectNotFollowed pins a fail-open: the check's client
// followed redirects, so a check that sends unauthenticated callers to a
// sign-in page (302, then 200) admitted every credential and cached the
// admission, even with when_down = "reject". A 3xx is not a verdict: it
// counts as a check that cannot answer.
func TestCheckRedirectNotFollowed(t *testing.T) {
	check := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/login" {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.Redirect(w, r, "/login", http.StatusFound)
	}))
	t.Cleanup(check.Close)
	g := New(Options{CheckURL: check.URL + "/check", RejectWhenDown: true})
	stored := false
	h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		stored = true
		w.WriteHeader(http.StatusAccepted)
	}))
	r := httptest.NewRequest(http.MethodPost, "/x", nil)
	r.Header.Set("Authorization", "Bearer forged")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if stored || w.Code != http.StatusServiceUnavailable {
		t.Fatalf("redirecting check: %d, stored %v; want 503 and nothing stored", w.Code, stored)
	}
}
