package outbound

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// Per-host circuit breakers of outbound calls (webhook deliveries and
// workflow http steps): a host's breaker opens after BreakerFailures
// consecutive failed calls (connection errors, timeouts, 408, 429, 5xx);
// while open no request is sent to that host; after the cooldown one probe
// call is let through (half-open) and its outcome closes or re-opens it.

// BreakerFailures is how many consecutive failures open a host's breaker.
const BreakerFailures = 5

// maxBreakers bounds how many hosts have a breaker (and a flow_breaker_open
// series). Past it, the least recently used breaker is forgotten, a closed
// one first.
const maxBreakers = 1024

// ErrBreakerOpen is the error of a call that the breaker refused.
var ErrBreakerOpen = errors.New("circuit breaker open")

// statusError carries an answer whose status counts as a host failure, so
// the breaker sees it as one; Breakers.Do turns it back into the answer.
type statusError struct{ code int }

func (e *statusError) Error() string { return fmt.Sprintf("answered %d", e.code) }

// HostFailure reports whether an answer with status code counts against
// its host: the host is overloaded or broken, not the request.
func HostFailure(code int) bool {
	return code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests
}

type hostBreaker struct {
	cb   *gobreaker.CircuitBreaker[*http.Response]
	used time.Time
}

// Breakers is the set of per-host breakers. It is a Prometheus collector:
// flow_breaker_open{host} is 1 while a host's breaker is open, 0 when it is
// closed or half-open (read at scrape time, so a breaker whose cooldown has
// passed shows 0 even before the next call).
type Breakers struct {
	cooldown time.Duration
	desc     *prometheus.Desc

	mu sync.Mutex
	m  map[string]*hostBreaker
}

// NewBreakers returns an empty set; cooldown 0 means 1 minute.
func NewBreakers(cooldown time.Duration) *Breakers {
	if cooldown <= 0 {
		cooldown = time.Minute
	}
	return &Breakers{
		cooldown: cooldown,
		desc: prometheus.NewDesc("flow_breaker_open",
			"1 while the circuit breaker of an outbound host (webhooks, http steps) is open, else 0.", []string{"host"}, nil),
		m: map[string]*hostBreaker{},
	}
}

// hostKey is the breaker key of u: lower-case host and port (the scheme's
// default port if none is written).
func hostKey(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// get returns host's breaker, creating it.
func (b *Breakers) get(host string) *gobreaker.CircuitBreaker[*http.Response] {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	if hb := b.m[host]; hb != nil {
		hb.used = now
		return hb.cb
	}
	if len(b.m) >= maxBreakers {
		b.evictLocked()
	}
	cb := gobreaker.NewCircuitBreaker[*http.Response](gobreaker.Settings{
		Name:        host,
		MaxRequests: 1, // one probe when half-open
		Timeout:     b.cooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= BreakerFailures },
		// A call cancelled by its caller (shutdown, job cancelled) says
		// nothing about the host.
		IsExcluded: func(err error) bool { return errors.Is(err, context.Canceled) },
	})
	b.m[host] = &hostBreaker{cb: cb, used: now}
	return cb
}

// evictLocked forgets the least recently used breaker, preferring closed
// ones (forgetting an open one lets its host be tried again early).
func (b *Breakers) evictLocked() {
	victim, closed := "", false
	var oldest time.Time
	for h, hb := range b.m {
		isClosed := hb.cb.State() == gobreaker.StateClosed
		if victim == "" || (isClosed && !closed) || (isClosed == closed && hb.used.Before(oldest)) {
			victim, closed, oldest = h, isClosed, hb.used
		}
	}
	delete(b.m, victim)
}

// do makes the call fn to the host of u through that host's breaker. An
// answer is returned as is (whether or not it counted as a failure); a call
// the breaker refused returns an error wrapping ErrBreakerOpen.
func (b *Breakers) Do(u *url.URL, fn func() (*http.Response, error)) (*http.Response, error) {
	host := hostKey(u)
	resp, err := b.get(host).Execute(func() (*http.Response, error) {
		resp, err := fn()
		if err == nil && HostFailure(resp.StatusCode) {
			return resp, &statusError{resp.StatusCode}
		}
		return resp, err
	})
	var se *statusError
	switch {
	case errors.As(err, &se):
		return resp, nil
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		return nil, fmt.Errorf("%s: %w (%d consecutive failures; next probe within %s)", host, ErrBreakerOpen, BreakerFailures, b.cooldown)
	}
	return resp, err
}

// Describe implements prometheus.Collector.
func (b *Breakers) Describe(ch chan<- *prometheus.Desc) { ch <- b.desc }

// Collect implements prometheus.Collector.
func (b *Breakers) Collect(ch chan<- prometheus.Metric) {
	b.mu.Lock()
	type hostState struct {
		host string
		cb   *gobreaker.CircuitBreaker[*http.Response]
	}
	all := make([]hostState, 0, len(b.m))
	for h, hb := range b.m {
		all = append(all, hostState{h, hb.cb})
	}
	b.mu.Unlock()
	for _, hs := range all {
		v := 0.0
		if hs.cb.State() == gobreaker.StateOpen {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(b.desc, prometheus.GaugeValue, v, hs.host)
	}
}

// BreakerTransport sends every request through its host's breaker.
type BreakerTransport struct {
	Next     http.RoundTripper // sends the requests the breaker lets through
	Breakers *Breakers         // the per-host breakers
}

func (t *BreakerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.Breakers.Do(req.URL, func() (*http.Response, error) { return t.Next.RoundTrip(req) })
	if errors.Is(err, ErrBreakerOpen) && req.Body != nil {
		req.Body.Close() // a RoundTripper closes the body, even when it sends nothing
	}
	return resp, err
}
