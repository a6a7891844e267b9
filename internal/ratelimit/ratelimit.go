// Package ratelimit limits requests per key: one token bucket per (key,
// class), refilled at the class's rate. Memory is bounded (Limits.MaxTracked)
// whatever the number of keys; a dropped bucket was full anyway, or its key
// starts afresh.
package ratelimit

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// Rate is a rate limit: Count requests per Per, in bursts of up to Count
// (a token bucket that holds Count tokens and refills at Count/Per). The
// zero Rate means "the default" wherever a Rate is an option.
type Rate struct {
	Count int
	Per   time.Duration
}

// defaultMaxTracked is the default of Limits.MaxTracked.
const defaultMaxTracked = 100_000

// ParseRate parses "<count>/<unit>": a whole count from 1 to 999999999 and
// a unit of s (sec, second), m (min, minute) or h (hour), without spaces,
// e.g. "100/min" or "5/s". Anything else is an error saying what is wanted.
func ParseRate(s string) (Rate, error) {
	count, unit, found := strings.Cut(s, "/")
	if !found || count == "" || len(count) > 9 || strings.Trim(count, "0123456789") != "" {
		return Rate{}, fmt.Errorf("want <count>/<unit> such as \"100/min\" (units s, min, h), got %q", s)
	}
	var per time.Duration
	switch unit {
	case "s", "sec", "second":
		per = time.Second
	case "m", "min", "minute":
		per = time.Minute
	case "h", "hour":
		per = time.Hour
	default:
		return Rate{}, fmt.Errorf("unit %q: want s, sec, second, m, min, minute, h or hour (in %q)", unit, s)
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 {
		return Rate{}, fmt.Errorf("count %q: want a whole number from 1 (in %q)", count, s)
	}
	return Rate{Count: n, Per: per}, nil
}

// UnmarshalText parses a Rate with ParseRate (for configuration files).
func (r *Rate) UnmarshalText(b []byte) error {
	v, err := ParseRate(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// MarshalText writes r as ParseRate reads it.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// String writes r as "100/min" (or "100/1m30s" for a period without a unit
// name).
func (r Rate) String() string {
	switch r.Per {
	case time.Second:
		return fmt.Sprintf("%d/s", r.Count)
	case time.Minute:
		return fmt.Sprintf("%d/min", r.Count)
	case time.Hour:
		return fmt.Sprintf("%d/h", r.Count)
	}
	return fmt.Sprintf("%d/%v", r.Count, r.Per)
}

func (r Rate) valid() bool { return r.Count >= 1 && r.Per > 0 }

// Limits are the per-API-key request rates. Each zero Rate means its
// default. Each class has its own bucket per key: a post creation counts
// against Posts only, not also against Default.
type Limits struct {
	// Default limits every authenticated route without a class of its own;
	// zero means 100/min.
	Default Rate
	// Posts limits POST /api/v1/channels/{id}/posts; zero means 30/min.
	Posts Rate
	// Webhooks limits POST /api/v1/webhooks; zero means 10/min.
	Webhooks Rate
	// Keys limits POST /api/v1/keys; zero means 5/min.
	Keys Rate
	// MaxTracked bounds how many (key, class) buckets are kept in memory;
	// 0 means 100,000. Buckets idle long enough to be full again are
	// dropped first (which changes nothing: a new bucket is full too); past
	// the bound, others go as well, which lets their keys start afresh.
	MaxTracked int
	// Now is the limiter's clock; nil means time.Now. Tests inject one.
	// (Buckets in Redis go by the Redis server's clock.)
	Now func() time.Time
	// Redis, when set, keeps the buckets in Redis, shared by every process
	// that uses the same Redis (see Limiter.Allow); nil means in memory,
	// per process.
	Redis redis.UniversalClient
	// OnRedisError is told of each failed Redis call (after which the
	// in-memory bucket decided); nil means ignore.
	OnRedisError func(error)
}

// Class is which bucket of a key a route draws from.
type Class int

const (
	ClassDefault Class = iota
	ClassPosts
	ClassWebhooks
	ClassKeys
	numClasses
)

// Limiter holds one token bucket per (API key, class). It is safe for
// concurrent use. Memory is bounded: see Limits.MaxTracked.
type Limiter struct {
	rates   [numClasses]Rate
	now     func() time.Time
	max     int
	mu      sync.Mutex
	buckets map[bucketKey]*bucket
	swept   time.Time // last sweep of idle buckets

	redis        *redis_rate.Limiter // nil: in memory only
	onRedisError func(error)
}

type bucketKey struct {
	key   string
	class Class
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time // last use
}

// New checks o and fills in its defaults.
func New(o Limits) (*Limiter, error) {
	l := &Limiter{now: o.Now, max: o.MaxTracked, buckets: map[bucketKey]*bucket{}, onRedisError: o.OnRedisError}
	if o.Redis != nil {
		l.redis = redis_rate.NewLimiter(o.Redis)
	}
	for _, c := range []struct {
		class      Class
		name       string
		given, def Rate
	}{
		{ClassDefault, "default", o.Default, Rate{100, time.Minute}},
		{ClassPosts, "posts", o.Posts, Rate{30, time.Minute}},
		{ClassWebhooks, "webhooks", o.Webhooks, Rate{10, time.Minute}},
		{ClassKeys, "keys", o.Keys, Rate{5, time.Minute}},
	} {
		r := c.given
		if r == (Rate{}) {
			r = c.def
		}
		if !r.valid() {
			return nil, fmt.Errorf("ratelimit: rate limit %s: want a count >= 1 per a period > 0, got %d per %v", c.name, r.Count, r.Per)
		}
		l.rates[c.class] = r
	}
	if l.now == nil {
		l.now = time.Now
	}
	if l.max <= 0 {
		l.max = defaultMaxTracked
	}
	return l, nil
}

// Verdict is the outcome of one request against its bucket.
type Verdict struct {
	Allowed    bool
	Limit      int           // the bucket's size (requests per period)
	Remaining  int           // whole tokens left after this request
	Reset      time.Duration // until the bucket is full again
	RetryAfter time.Duration // until the next request is allowed (denied only)
	Period     time.Duration
}

// Take draws one token for key's class, or reports when one will be there.
func (l *Limiter) Take(key string, class Class) Verdict {
	r := l.rates[class]
	now := l.now()
	perToken := float64(r.Per) / float64(r.Count) // nanoseconds per token
	l.mu.Lock()
	defer l.mu.Unlock()
	bk := bucketKey{key, class}
	b := l.buckets[bk]
	if b == nil {
		l.makeRoom(now)
		b = &bucket{lim: rate.NewLimiter(rate.Limit(float64(r.Count)/r.Per.Seconds()), r.Count)}
		l.buckets[bk] = b
	}
	b.seen = now
	v := Verdict{Limit: r.Count, Period: r.Per, Allowed: b.lim.AllowN(now, 1)}
	tokens := b.lim.TokensAt(now)
	v.Remaining = max(int(math.Floor(tokens)), 0)
	v.Reset = time.Duration(math.Ceil((float64(r.Count) - tokens) * perToken))
	if !v.Allowed {
		v.RetryAfter = time.Duration(math.Ceil((1 - tokens) * perToken))
	}
	return v
}

// makeRoom drops idle buckets once a minute, and whenever the map is at
// its bound. A bucket unused for its whole period is full again, so
// dropping it loses nothing. Called with mu held.
func (l *Limiter) makeRoom(now time.Time) {
	if len(l.buckets) < l.max && now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	for k, b := range l.buckets {
		if now.Sub(b.seen) >= l.rates[k.class].Per {
			delete(l.buckets, k)
		}
	}
	// Still full: every bucket was used within its period. Drop the
	// least recently used tenth, so the sweep is not repeated per request.
	if len(l.buckets) >= l.max {
		type aged struct {
			k    bucketKey
			seen time.Time
		}
		all := make([]aged, 0, len(l.buckets))
		for k, b := range l.buckets {
			all = append(all, aged{k, b.seen})
		}
		slices.SortFunc(all, func(a, b aged) int { return a.seen.Compare(b.seen) })
		for _, a := range all[:max(len(all)/10, len(all)-l.max+1)] {
			delete(l.buckets, a.k)
		}
	}
}

// tracked is how many buckets are in memory.
func (l *Limiter) tracked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// Seconds rounds d up to whole seconds, at least 0 (after rounding to the
// millisecond, so float noise in the token count does not add a second).
func Seconds(d time.Duration) string {
	d = d.Round(time.Millisecond)
	if d <= 0 {
		return "0"
	}
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// SetHeaders writes the RateLimit-* headers of v (and Retry-After when the
// request was refused). RateLimit-Reset is the seconds until the bucket is
// full again; RateLimit-Policy names the quota as "<count>;w=<seconds>".
func (v Verdict) SetHeaders(h http.Header) {
	h.Set("RateLimit-Limit", strconv.Itoa(v.Limit))
	h.Set("RateLimit-Remaining", strconv.Itoa(v.Remaining))
	h.Set("RateLimit-Reset", Seconds(v.Reset))
	h.Set("RateLimit-Policy", fmt.Sprintf("%d;w=%d", v.Limit, int64(v.Period/time.Second)))
	if !v.Allowed {
		ra := Seconds(v.RetryAfter)
		if ra == "0" {
			ra = "1"
		}
		h.Set("Retry-After", ra)
	}
}
