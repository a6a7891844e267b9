package ratelimit

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]Rate{
		"100/min": {100, time.Minute}, "5/s": {5, time.Second}, "1/h": {1, time.Hour},
		"30/m": {30, time.Minute}, "7/sec": {7, time.Second}, "2/second": {2, time.Second},
		"3/minute": {3, time.Minute}, "4/hour": {4, time.Hour}, "999999999/s": {999999999, time.Second},
	} {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseRate(got.String()); err != nil || back != got {
			t.Errorf("%v does not round-trip: %q → %v %v", got, got.String(), back, err)
		}
	}
	for in, want := range map[string]string{
		"": "want <count>/<unit>", "100": "want <count>/<unit>", "100/": "unit", "/min": "want <count>/<unit>",
		"0/min": "count", "-1/min": "want <count>/<unit>", "1.5/min": "want <count>/<unit>", "100 /min": "want <count>/<unit>",
		"100/ min": "unit", "100/MIN": "unit", "100/day": "unit", "100/min/s": "unit", "1000000000/s": "want <count>/<unit>",
		"+5/s": "want <count>/<unit>", "5/1m": "unit",
	} {
		_, err := ParseRate(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRate(%q): error %v, want one containing %q", in, err, want)
		}
	}
	var r Rate
	if err := r.UnmarshalText([]byte("12/min")); err != nil || r != (Rate{12, time.Minute}) {
		t.Fatalf("UnmarshalText: %v %v", r, err)
	}
}

// clock is a manual clock for the limiter.
type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

// header is what v writes into a response.
func header(v Verdict) http.Header {
	h := http.Header{}
	v.SetHeaders(h)
	return h
}

func hget(v Verdict, k string) string { return header(v).Get(k) }

// TestLimiterBucket: a class allows its count at once, refuses the next
// with the time until a token is back, refills at count per period, and
// keeps keys and classes apart.
func TestLimiterBucket(t *testing.T) {
	c := newClock()
	l, err := New(Limits{Keys: Rate{5, time.Minute}, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		v := l.Take("k1", ClassKeys)
		if !v.Allowed || v.Remaining != 4-i || hget(v, "RateLimit-Limit") != "5" || hget(v, "Retry-After") != "" {
			t.Fatalf("take %d: %+v %v", i+1, v, header(v))
		}
	}
	v := l.Take("k1", ClassKeys)
	if v.Allowed || v.Remaining != 0 || hget(v, "Retry-After") != "12" || hget(v, "RateLimit-Reset") != "60" || hget(v, "RateLimit-Policy") != "5;w=60" {
		t.Fatalf("6th take: %+v %v", v, header(v))
	}
	// Other keys and other classes have their own buckets.
	if !l.Take("k2", ClassKeys).Allowed || !l.Take("k1", ClassDefault).Allowed {
		t.Fatal("buckets are shared")
	}
	c.add(11 * time.Second)
	if l.Take("k1", ClassKeys).Allowed {
		t.Fatal("allowed before a token came back")
	}
	c.add(time.Second)
	if v := l.Take("k1", ClassKeys); !v.Allowed || v.Remaining != 0 {
		t.Fatalf("after 12 s: %+v", v)
	}
	c.add(time.Hour)
	if v := l.Take("k1", ClassKeys); !v.Allowed || v.Remaining != 4 || hget(v, "RateLimit-Reset") != "12" {
		t.Fatalf("after an hour: %+v %v", v, header(v))
	}
}

// TestLimiterBounded: idle buckets are dropped, and the number of buckets
// never passes MaxTracked however many keys come.
func TestLimiterBounded(t *testing.T) {
	c := newClock()
	l, err := New(Limits{MaxTracked: 100, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		l.Take(fmt.Sprint("key-", i), ClassDefault)
		if n := l.tracked(); n > 100 {
			t.Fatalf("%d buckets after %d keys", n, i+1)
		}
	}
	c.add(2 * time.Minute) // all idle for longer than their period: full again
	l.Take("fresh", ClassDefault)
	if n := l.tracked(); n != 1 {
		t.Fatalf("%d buckets after the idle ones went", n)
	}
	// The sweep keeps buckets used within their period ("fresh" and
	// "busy" at +0 s, "busy" again at +30 s, a sweep at +61 s: "fresh" goes).
	l.Take("busy", ClassDefault)
	c.add(30 * time.Second)
	l.Take("busy", ClassDefault)
	c.add(31 * time.Second)
	l.Take("other", ClassDefault)
	if _, ok := l.buckets[bucketKey{"busy", ClassDefault}]; !ok || l.tracked() != 2 {
		t.Fatalf("after the sweep: %d buckets, busy kept %v", l.tracked(), ok)
	}
}

// TestLimiterOptions: a Rate that is set must be valid; the zero Rate is
// the default.
func TestLimiterOptions(t *testing.T) {
	for _, bad := range []Limits{{Posts: Rate{0, time.Minute}}, {Keys: Rate{5, 0}}, {Default: Rate{-1, time.Second}}} {
		if _, err := New(bad); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
	l, err := New(Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if l.rates != [numClasses]Rate{{100, time.Minute}, {30, time.Minute}, {10, time.Minute}, {5, time.Minute}} {
		t.Fatalf("defaults %v", l.rates)
	}
}
