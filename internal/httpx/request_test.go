package httpx

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		v     string
		limit time.Duration
		want  time.Duration
		ok    bool
	}{
		{"", 0, 0, false},
		{"5", 0, 5 * time.Second, true},
		{"0", 0, 0, true},
		{"-1", 0, 0, false},
		{"7200", time.Hour, time.Hour, true},
		{"99999999999999999", 0, 24 * time.Hour, true}, // no overflow: capped at the default day
		{"Thu, 01 Jan 2026 12:00:30 GMT", 0, 30 * time.Second, true},
		{"Thu, 01 Jan 2026 11:00:00 GMT", 0, 0, true}, // in the past: no wait
		{"Fri, 02 Jan 2026 14:00:00 GMT", time.Hour, time.Hour, true},
		{"soon", 0, 0, false},
	} {
		got, ok := RetryAfter(c.v, now, c.limit)
		if got != c.want || ok != c.ok {
			t.Errorf("RetryAfter(%q, %v) = %v, %v; want %v, %v", c.v, c.limit, got, ok, c.want, c.ok)
		}
	}
}

func TestRequestID(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Request-ID", "abc-123")
	if got := RequestID(r); got != "abc-123" {
		t.Fatalf("client id not kept: %q", got)
	}
	for _, bad := range []string{"", "has space", strings.Repeat("x", 201), "tab\there", "ünï"} {
		r.Header.Set("X-Request-ID", bad)
		if got := RequestID(r); got == bad || len(got) != 36 {
			t.Errorf("X-Request-ID %q: got %q, want a fresh UUID", bad, got)
		}
	}
}

func TestRecorder(t *testing.T) {
	rec := &Recorder{ResponseWriter: httptest.NewRecorder()}
	_, _ = rec.Write([]byte("hello"))
	rec.WriteHeader(http.StatusTeapot) // too late: the first status stays
	if rec.Status != http.StatusOK || rec.Bytes != 5 {
		t.Fatalf("status %d bytes %d", rec.Status, rec.Bytes)
	}
}

// TestProblemJSON: the standard members always, in RFC order, then the
// extensions; extra headers are sent.
func TestProblemJSON(t *testing.T) {
	w := httptest.NewRecorder()
	WriteProblem(w, Problem{Status: http.StatusBadGateway, Title: "Not delivered", Detail: "<dead>", RequestID: "r1",
		Header: http.Header{"Retry-After": {"3"}}, Extra: map[string]any{"delivery_id": "d1"}})
	want := `{"type":"about:blank","title":"Not delivered","status":502,"detail":"<dead>","request_id":"r1","delivery_id":"d1"}` + "\n"
	if w.Body.String() != want || w.Code != 502 || w.Header().Get("Retry-After") != "3" {
		t.Fatalf("got %d %q %v", w.Code, w.Body.String(), w.Header())
	}
	var p Problem
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != 502 || p.Detail != "<dead>" {
		t.Fatalf("round trip: %+v %v", p, err)
	}
}
