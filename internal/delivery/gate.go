package delivery

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
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
// ready (readiness probe), must not claim another partition (X-Partition,
// see checkClaim) and its breaker must not be open. Waiting at the gate
// burns no attempt.
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
	claim      string // the backend's X-Partition while it disagrees with the edge; "" = none
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
	if g.ready && g.claim == "" {
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
		if g.claim == "" { // while misconfigured, that is what the log says
			if ready {
				g.log.Info("backend ready")
			} else {
				g.log.Warn("backend not ready: partition paused")
			}
		}
		g.broadcast()
	}
}

// setClaim records the outcome of comparing the backend's partition claim
// with the edge's mapping: claim is the backend's X-Partition when it
// disagrees ("" when it agrees or says nothing), want the edge's own. One
// log line when the disagreement starts, one when it ends.
func (g *gate) setClaim(claim, want string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.claim == claim {
		return
	}
	switch {
	case g.claim == "":
		g.log.Error("backend misconfigured: it claims another partition; nothing is delivered to it",
			"claims", claim, "edge_maps_it_to", want)
	case claim == "":
		g.log.Info("backend claim agrees again", "edge_maps_it_to", want, "ready", g.ready)
	default:
		g.log.Error("backend misconfigured: it claims another partition; nothing is delivered to it",
			"claims", claim, "edge_maps_it_to", want, "claimed_before", g.claim)
	}
	g.claim = claim
	g.broadcast()
}

// snapshot returns readiness (false while the backend claims another
// partition) and breaker state.
func (g *gate) snapshot() (ready bool, breaker string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ready = g.ready && g.claim == ""
	if g.state == BreakerOpen && !time.Now().Before(g.openUntil) {
		return ready, BreakerHalfOpen
	}
	return ready, g.state
}

// misclaim returns the backend's partition claim while it disagrees with
// the edge's mapping, "" otherwise.
func (g *gate) misclaim() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.claim
}

// probeLoop probes url every interval until ctx ends or stop closes, and
// sets readiness: ready means a 2xx answer within the client's timeout.
// Every answer's X-Partition (any status) is compared with want (see
// checkClaim); a probe that got no answer leaves the last verdict on the
// claim as it was.
func probeLoop(ctx context.Context, stop <-chan struct{}, client *http.Client, url string, interval time.Duration, want Claim, g *gate) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ready, header, answered := probeOnce(ctx, client, url)
		if answered {
			g.setClaim(checkClaim(header, want), want.String())
		}
		g.setReady(ready)
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
	}
}

// probeOnce asks url once: ready is a 2xx answer, claim the answer's
// X-Partition, answered whether any answer came.
func probeOnce(ctx context.Context, client *http.Client, url string) (ready bool, claim string, answered bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, "", false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, "", false
	}
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 300, resp.Header.Get(HeaderPartition), true
}

// HeaderPartition is the header of a backend's readiness answer that says
// which partition of how many it serves: "N/M".
const HeaderPartition = "X-Partition"

// Claim is a partition and the partition count, as X-Partition carries it.
type Claim struct {
	Partition, Count int
}

// String is the header value "N/M".
func (c Claim) String() string { return fmt.Sprintf("%d/%d", c.Partition, c.Count) }

// ParseClaim reads an X-Partition value "N/M" (0 <= N < M).
func ParseClaim(s string) (Claim, error) {
	ns, ms, ok := strings.Cut(strings.TrimSpace(s), "/")
	n, err1 := strconv.Atoi(ns)
	m, err2 := strconv.Atoi(ms)
	if !ok || err1 != nil || err2 != nil || m < 1 || n < 0 || n >= m {
		return Claim{}, fmt.Errorf("delivery: %s %q is not N/M with 0 <= N < M", HeaderPartition, s)
	}
	return Claim{Partition: n, Count: m}, nil
}

// checkClaim compares a backend's X-Partition header with want, the
// edge's mapping of that backend: "" when they agree or the header is
// absent (a backend that says nothing is taken as it is), else the header
// as sent (an unreadable header disagrees too).
func checkClaim(header string, want Claim) string {
	if header == "" {
		return ""
	}
	if c, err := ParseClaim(header); err == nil && c == want {
		return ""
	}
	return header
}
