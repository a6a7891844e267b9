package delivery

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Breaker states, as reported by /edge/v1/partitions.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half_open"
)

// gate decides when a partition may send an attempt: its backend must be
// ready (readiness probe) and its breaker must not be open. Waiting at the
// gate burns no attempt. After `threshold` consecutive failed attempts the
// breaker opens for `cooldown`; then one probe attempt goes through
// (half-open): success closes the breaker, failure opens it again.
type gate struct {
	threshold int
	cooldown  time.Duration

	mu        sync.Mutex
	ready     bool
	failures  int
	state     string
	openUntil time.Time
	probing   bool          // a half-open probe attempt is under way
	changed   chan struct{} // closed and replaced on every change
}

func newGate(threshold int, cooldown time.Duration, ready bool) *gate {
	return &gate{threshold: threshold, cooldown: cooldown, ready: ready, state: BreakerClosed, changed: make(chan struct{})}
}

// broadcast wakes every waiter; g.mu must be held.
func (g *gate) broadcast() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// wait blocks until an attempt may be sent. probe tells whether the caller
// holds the half-open probe token; it must pass it back to report.
func (g *gate) wait(ctx context.Context) (probe bool, err error) {
	for {
		g.mu.Lock()
		var timer *time.Timer
		if g.ready {
			switch g.state {
			case BreakerClosed:
				g.mu.Unlock()
				return false, nil
			case BreakerOpen:
				if d := time.Until(g.openUntil); d > 0 {
					timer = time.NewTimer(d)
				} else {
					g.state = BreakerHalfOpen
					g.broadcast()
					g.mu.Unlock()
					continue
				}
			case BreakerHalfOpen:
				if !g.probing {
					g.probing = true
					g.mu.Unlock()
					return true, nil
				}
			}
		}
		ch := g.changed
		g.mu.Unlock()
		var expired <-chan time.Time
		if timer != nil {
			expired = timer.C
		}
		select {
		case <-ctx.Done():
			stopTimer(timer)
			return false, ctx.Err()
		case <-ch:
		case <-expired:
		}
		stopTimer(timer)
	}
}

// attempt results passed to report.
const (
	resultSuccess = iota // the backend answered (any final or 2xx status)
	resultFailure        // connection error, timeout or retryable status
	resultNeutral        // the attempt was abandoned (shutdown): no verdict
)

// report records an attempt's result.
func (g *gate) report(probe bool, result int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if probe {
		g.probing = false
	}
	switch result {
	case resultSuccess:
		g.failures = 0
		if g.state != BreakerClosed {
			g.state = BreakerClosed
			g.broadcast()
		}
	case resultFailure:
		g.failures++
		if g.state == BreakerHalfOpen || (g.state == BreakerClosed && g.threshold > 0 && g.failures >= g.threshold) {
			g.state = BreakerOpen
			g.openUntil = time.Now().Add(g.cooldown)
			g.broadcast()
		}
	default:
		if probe {
			g.broadcast() // let another waiter take the probe
		}
	}
}

// setReady records a readiness probe's verdict.
func (g *gate) setReady(ready bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ready != ready {
		g.ready = ready
		g.broadcast()
	}
}

// snapshot returns readiness and breaker state.
func (g *gate) snapshot() (ready bool, breaker string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.state == BreakerOpen && !time.Now().Before(g.openUntil) {
		return g.ready, BreakerHalfOpen
	}
	return g.ready, g.state
}

// probeLoop probes url every interval until ctx ends or stop closes, and
// sets readiness: ready means a 2xx answer within the client's timeout.
func probeLoop(ctx context.Context, stop <-chan struct{}, client *http.Client, url string, interval time.Duration, g *gate) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		g.setReady(probeOnce(ctx, client, url))
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func probeOnce(ctx context.Context, client *http.Client, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300
}

func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}
