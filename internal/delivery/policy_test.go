package delivery

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/metrics"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name    string
		status  int // 0: no response
		err     error
		outcome string
		retry   bool
	}{
		{"200", 200, nil, metrics.AttemptOK, false},
		{"302", 302, nil, metrics.AttemptOK, false},
		{"400", 400, nil, metrics.AttemptRejected, false},
		{"404", 404, nil, metrics.AttemptRejected, false},
		{"408", 408, nil, metrics.AttemptRetry, true},
		{"421", 421, nil, metrics.AttemptMisroute, false},
		{"429", 429, nil, metrics.AttemptRetry, true},
		{"500", 500, nil, metrics.AttemptRetry, true},
		{"501", 501, nil, metrics.AttemptRejected, false},
		{"503", 503, nil, metrics.AttemptRetry, true},
		{"connection error", 0, errors.New("dial tcp: connection refused"), metrics.AttemptError, true},
		{"no response, no error", 0, nil, metrics.AttemptError, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var resp *http.Response
			if tc.status != 0 {
				resp = &http.Response{StatusCode: tc.status, Header: http.Header{}}
			}
			outcome, retry := classify(resp, tc.err)
			if outcome != tc.outcome || retry != tc.retry {
				t.Fatalf("classify(%d, %v) = (%q, %v), want (%q, %v)", tc.status, tc.err, outcome, retry, tc.outcome, tc.retry)
			}
		})
	}
}

func TestBackoffFullJitterBounds(t *testing.T) {
	const (
		initial = 10 * time.Millisecond
		maxB    = time.Second
		draws   = 2000
	)
	now := time.Now()
	prevMax := time.Duration(-1)
	for attempts := 0; attempts <= 100; attempts++ {
		a := max(attempts, 1)
		ceiling := maxB
		if a-1 < 30 {
			ceiling = min(maxB, initial<<(a-1))
		}
		var hi time.Duration
		for range draws {
			d := backoff(initial, maxB, maxB, attempts, nil, now)
			if d < 0 || d > ceiling {
				t.Fatalf("attempts %d: backoff %v outside [0, %v]", attempts, d, ceiling)
			}
			hi = max(hi, d)
		}
		// Over many draws the largest is close to the ceiling (P of all draws
		// below ceiling/2 is 2^-2000).
		if hi < ceiling/2 {
			t.Fatalf("attempts %d: largest of %d draws %v, want near ceiling %v", attempts, draws, hi, ceiling)
		}
		if attempts >= 1 && attempts <= 7 && hi <= prevMax/2 {
			t.Fatalf("attempts %d: backoff does not grow: max %v after %v", attempts, hi, prevMax)
		}
		if attempts >= 1 {
			prevMax = hi
		}
	}
}

func TestBackoffGrowsAndCaps(t *testing.T) {
	const initial, maxB = 10 * time.Millisecond, 300 * time.Millisecond
	now := time.Now()
	maxOf := func(attempts int) time.Duration {
		var hi time.Duration
		for range 2000 {
			hi = max(hi, backoff(initial, maxB, maxB, attempts, nil, now))
		}
		return hi
	}
	m1, m3, m5 := maxOf(1), maxOf(3), maxOf(5)
	if m1 > initial || m3 <= initial || m3 > 4*initial || m5 <= 4*initial {
		t.Fatalf("max draws by attempts 1/3/5 = %v/%v/%v; want growth 10ms → 40ms → 160ms ceilings", m1, m3, m5)
	}
	for _, a := range []int{6, 10, 40, 61, 62, 63, 64, 1000} {
		if m := maxOf(a); m > maxB || m < maxB/2 {
			t.Fatalf("attempts %d: max draw %v, want capped at %v (and near it)", a, m, maxB)
		}
	}
}

func respWithRetryAfter(v string) *http.Response {
	h := http.Header{}
	if v != "" {
		h.Set("Retry-After", v)
	}
	return &http.Response{StatusCode: http.StatusServiceUnavailable, Header: h}
}

func TestBackoffRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	const initial, maxB = time.Millisecond, 10 * time.Millisecond
	tests := []struct {
		name   string
		header string
		maxRA  time.Duration
		want   time.Duration
	}{
		{"seconds", "5", time.Hour, 5 * time.Second},
		{"seconds capped", "120", 30 * time.Second, 30 * time.Second},
		{"date", now.Add(7 * time.Second).Format(http.TimeFormat), time.Hour, 7 * time.Second},
		{"date capped", now.Add(2 * time.Hour).Format(http.TimeFormat), time.Minute, time.Minute},
		{"huge seconds capped", "999999999999", 90 * time.Second, 90 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for range 100 {
				if got := backoff(initial, maxB, tc.maxRA, 1, respWithRetryAfter(tc.header), now); got != tc.want {
					t.Fatalf("backoff with Retry-After %q = %v, want %v", tc.header, got, tc.want)
				}
			}
		})
	}
	// A Retry-After shorter than the jittered wait does not shorten it, and a
	// past date or 0 leaves the jittered wait.
	for _, h := range []string{"0", now.Add(-time.Hour).Format(http.TimeFormat), "garbage"} {
		for range 200 {
			got := backoff(initial, maxB, time.Hour, 10, respWithRetryAfter(h), now)
			if got < 0 || got > maxB {
				t.Fatalf("Retry-After %q: backoff %v outside [0, %v]", h, got, maxB)
			}
		}
	}
}

func TestRetryAfterParsing(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
		ok     bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"3", 3 * time.Second, true},
		{"86400", 24 * time.Hour, true},
		{"86401", 24 * time.Hour, true},        // capped at a day
		{"999999999999", 24 * time.Hour, true}, // capped, no overflow
		{"-1", 0, false},
		{"1.5", 0, false},
		{"abc", 0, false},
		{" 5", 0, false},
		{"5s", 0, false},
		{"99999999999999999999999", 0, false}, // overflows int64, not a date
		{"Mon, 99 Foo 2026 00:00:00 GMT", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-90 * time.Second).Format(http.TimeFormat), 0, true},           // past: retry now
		{now.Add(10 * time.Second).Format(time.RFC850), 10 * time.Second, true}, // obsolete RFC 850 form
		{now.Add(10 * time.Second).Format(time.ANSIC), 10 * time.Second, true},  // asctime form
	}
	for _, tc := range tests {
		got, ok := retryAfter(respWithRetryAfter(tc.header), now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("retryAfter(%q) = (%v, %v), want (%v, %v)", tc.header, got, ok, tc.want, tc.ok)
		}
	}
	if d, ok := retryAfter(nil, now); ok || d != 0 {
		t.Errorf("retryAfter(nil) = (%v, %v), want (0, false)", d, ok)
	}
}

func TestDecide(t *testing.T) {
	now := time.Now()
	p := policy{initial: 10 * time.Millisecond, max: time.Second, maxRetryAfter: 5 * time.Second, maxDuration: time.Hour, maxAttempts: 3}
	resp := func(code int, ra string) *http.Response {
		h := http.Header{}
		if ra != "" {
			h.Set("Retry-After", ra)
		}
		return &http.Response{StatusCode: code, Header: h}
	}
	tests := []struct {
		name     string
		resp     *http.Response
		err      error
		attempts int
		age      time.Duration
		verdict  int
		minWait  time.Duration
		maxWait  time.Duration
	}{
		{"201 final", resp(201, ""), nil, 1, 0, verdictFinal, 0, 0},
		{"400 final", resp(400, ""), nil, 1, 0, verdictFinal, 0, 0},
		{"421 dead at once", resp(421, ""), nil, 1, 0, verdictDead, 0, 0},
		{"503 retried", resp(503, ""), nil, 1, 0, verdictRetry, 0, 10 * time.Millisecond},
		{"429 Retry-After honoured", resp(429, "2"), nil, 1, 0, verdictRetry, 2 * time.Second, 2 * time.Second},
		{"Retry-After capped", resp(503, "3600"), nil, 1, 0, verdictRetry, 5 * time.Second, 5 * time.Second},
		{"connection error retried", nil, errors.New("connection refused"), 2, 0, verdictRetry, 0, 20 * time.Millisecond},
		{"max attempts", resp(503, ""), nil, 3, 0, verdictDead, 0, 0},
		{"max duration", resp(503, ""), nil, 1, 2 * time.Hour, verdictDead, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, wait, reason := p.decide(tc.resp, tc.err, tc.attempts, now.Add(-tc.age), now)
			if v != tc.verdict || wait < tc.minWait || wait > tc.maxWait {
				t.Fatalf("decide = (%d, %v, %q), want verdict %d with wait in [%v, %v]", v, wait, reason, tc.verdict, tc.minWait, tc.maxWait)
			}
			if v == verdictDead && reason == "" {
				t.Fatal("dead without a reason")
			}
		})
	}
}

func TestEvidenceOf(t *testing.T) {
	for _, tc := range []struct {
		status int
		err    error
		want   int
	}{
		{200, nil, evidenceUp}, {404, nil, evidenceUp}, {429, nil, evidenceNone}, {503, nil, evidenceKey},
		{501, nil, evidenceUp}, {0, errors.New("connection refused"), evidenceDown},
		{0, context.DeadlineExceeded, evidenceKey},
	} {
		var resp *http.Response
		if tc.status != 0 {
			resp = &http.Response{StatusCode: tc.status}
		}
		if got := evidenceOf(resp, tc.err); got != tc.want {
			t.Errorf("evidenceOf(%d, %v) = %d, want %d", tc.status, tc.err, got, tc.want)
		}
	}
}
