package delivery

import (
	"context"
	"log/slog"
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

// gate decides when a partition may start attempts: its backend must be
// ready (readiness probe) and its breaker must not be open. Waiting at the
// gate burns no attempt.
//
// The breaker opens only on evidence that the backend itself is down:
// `threshold` consecutive connection errors, or 5xx answers/timeouts from
// `threshold` distinct keys with no normal answer in between. One key that
// always fails (a poison request) or a throttled tenant (429) never opens
// it: those back off their own key. After `cooldown` one probe job goes
// through (half-open): an answer closes the breaker, a connection error
// opens it again.
type gate struct {
	threshold int
	cooldown  time.Duration
	log       *slog.Logger

	mu         sync.Mutex
	ready      bool
	state      string
	openUntil  time.Time
	probing    bool                // the half-open probe job is under way
	downs      int                 // consecutive connection errors
	failedKeys map[string]struct{} // keys answered 5xx/timeout since the last normal answer
	changed    chan struct{}       // closed and replaced on every change
}

func newGate(threshold int, cooldown time.Duration, ready bool, log *slog.Logger) *gate {
	return &gate{threshold: threshold, cooldown: cooldown, ready: ready, state: BreakerClosed,
		failedKeys: map[string]struct{}{}, changed: make(chan struct{}), log: log}
}

// broadcast wakes every waiter; g.mu must be held.
func (g *gate) broadcast() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// admit tells whether a job may start now. probe says the caller holds the
// half-open probe token (it must pass it back to report). When not admitted,
// the caller waits for changed or until wake (zero: no timer needed).
func (g *gate) admit(now time.Time) (ok, probe bool, changed <-chan struct{}, wake time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ready {
		switch g.state {
		case BreakerClosed:
			return true, false, nil, time.Time{}
		case BreakerOpen:
			if now.Before(g.openUntil) {
				return false, false, g.changed, g.openUntil
			}
			g.state = BreakerHalfOpen
			fallthrough
		case BreakerHalfOpen:
			if !g.probing {
				g.probing = true
				return true, true, nil, time.Time{}
			}
		}
	}
	return false, false, g.changed, time.Time{}
}

// wait blocks until admit says yes or ctx ends (used where a caller has
// nothing else to do meanwhile).
func (g *gate) wait(ctx context.Context) (probe bool, err error) {
	for {
		ok, probe, changed, wake := g.admit(time.Now())
		if ok {
			return probe, nil
		}
		var timer <-chan time.Time
		if !wake.IsZero() {
			t := time.NewTimer(time.Until(wake))
			defer t.Stop()
			timer = t.C
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-changed:
		case <-timer:
		}
	}
}

// report records the evidence of one attempt (evidence* value) for key.
// probe is what admit returned for the job.
func (g *gate) report(probe bool, evidence int, key string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if probe {
		g.probing = false
	}
	switch evidence {
	case evidenceUp:
		g.downs = 0
		clear(g.failedKeys)
		g.close()
	case evidenceKey:
		g.downs = 0
		g.failedKeys[key] = struct{}{}
		if probe {
			g.close() // the backend answered; a poison probe must not keep it open
		} else if g.threshold > 0 && len(g.failedKeys) >= g.threshold {
			g.open("5xx or timeouts from distinct keys", len(g.failedKeys))
		}
	case evidenceDown:
		g.downs++
		if probe || (g.threshold > 0 && g.downs >= g.threshold) {
			g.open("connection errors", g.downs)
		}
	default:
		if probe {
			g.broadcast() // no verdict: let another job take the probe
		}
	}
}

// open opens the breaker; g.mu must be held.
func (g *gate) open(why string, n int) {
	if g.state != BreakerOpen {
		g.log.Warn("breaker open: backend looks down", "why", why, "count", n, "cooldown", g.cooldown)
	}
	g.state = BreakerOpen
	g.openUntil = time.Now().Add(g.cooldown)
	g.downs = 0
	clear(g.failedKeys)
	g.broadcast()
}

// close closes the breaker; g.mu must be held.
func (g *gate) close() {
	if g.state != BreakerClosed {
		g.log.Info("breaker closed: backend answers again")
		g.state = BreakerClosed
		g.broadcast()
	}
}

// setReady records a readiness probe's verdict.
func (g *gate) setReady(ready bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ready != ready {
		g.ready = ready
		if ready {
			g.log.Info("backend ready")
		} else {
			g.log.Warn("backend not ready: partition paused")
		}
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
