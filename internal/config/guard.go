package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Accepted values of auth.when_down.
const (
	WhenDownAdmit  = "admit"  // check unreachable, no cached verdict: store it, the backend decides at delivery
	WhenDownReject = "reject" // check unreachable, no cached verdict: 503 + Retry-After
)

// Auth is the intake guard's optional forward authentication: before a
// request is stored, the edge asks CheckURL whether its credentials are
// valid. The zero CheckURL (default) turns it off.
type Auth struct {
	CheckURL string   `toml:"check_url"` // GET URL; "{N}" is replaced by the request's partition; "" (default) = off
	CacheTTL Duration `toml:"cache_ttl"` // how long a verdict is kept per credential hash; default 30s
	WhenDown string   `toml:"when_down"` // WhenDownAdmit (default) or WhenDownReject
	Timeout  Duration `toml:"timeout"`   // one check's timeout; default 2s
}

// Intake is the intake guard's optional per-client rate limit: a token
// bucket per credential the check admitted, per client IP for every other
// request (see package intake).
type Intake struct {
	Rate  string `toml:"rate"`  // "<count>/<unit>" (units s, min, h), e.g. "200/s"; "" (default) = off
	Burst int    `toml:"burst"` // bucket size; 0 (default) = the count of rate, at least 1
}

// PerSecond returns Rate as requests per second (0 when Rate is "").
func (i Intake) PerSecond() (float64, error) {
	if i.Rate == "" {
		return 0, nil
	}
	count, unit, ok := strings.Cut(i.Rate, "/")
	n, err := strconv.ParseFloat(strings.TrimSpace(count), 64)
	if !ok || err != nil || n <= 0 {
		return 0, fmt.Errorf(`must be "<count>/<unit>" with a count > 0, e.g. "200/s", got %q`, i.Rate)
	}
	per := map[string]time.Duration{"s": time.Second, "sec": time.Second, "m": time.Minute, "min": time.Minute, "h": time.Hour}[strings.TrimSpace(unit)]
	if per == 0 {
		return 0, fmt.Errorf("unit must be s, min or h, got %q", unit)
	}
	return n / per.Seconds(), nil
}

// BurstSize returns Burst, or when it is 0 the count of Rate (at least 1).
func (i Intake) BurstSize() int {
	if i.Burst > 0 {
		return i.Burst
	}
	count, _, _ := strings.Cut(i.Rate, "/")
	n, _ := strconv.ParseFloat(strings.TrimSpace(count), 64)
	return max(int(n), 1)
}

func (c Config) validateGuard(v *validator) {
	a := c.Auth
	if a.CheckURL != "" {
		if err := checkURL(strings.ReplaceAll(a.CheckURL, "{N}", "0")); err != nil {
			v.add("auth.check_url", "%v", err)
		}
	}
	v.duration("auth.cache_ttl", a.CacheTTL)
	v.duration("auth.timeout", a.Timeout)
	v.oneOf("auth.when_down", a.WhenDown, WhenDownAdmit, WhenDownReject)
	if _, err := c.Intake.PerSecond(); err != nil {
		v.add("intake.rate", "%v", err)
	}
	if c.Intake.Burst < 0 {
		v.add("intake.burst", "must be >= 0 (0 = the count of intake.rate), got %d", c.Intake.Burst)
	}
}

// checkURL accepts an absolute http(s) URL with a host (a query is allowed).
func checkURL(s string) error {
	base, _, _ := strings.Cut(s, "?")
	return checkBaseURL(base)
}
