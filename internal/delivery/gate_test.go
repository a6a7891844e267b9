package delivery

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// bound is how long a gate call may take beyond its own deadline before the
// test calls it hung. Every gate call runs in a goroutine under this bound so
// that a gate whose mutex is stuck fails the test instead of hanging it. It
// only bounds a hang, so it is far above what a loaded machine needs (it was
// 2 s).
const bound = 10 * time.Second

// bounded runs f and fails the test if it does not return within bound.
func bounded(t *testing.T, what string, f func()) {
	t.Helper()
	ch := make(chan struct{})
	go func() { f(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(bound):
		t.Fatalf("%s did not return within %v: the gate is stuck (its mutex is never released)", what, bound)
	}
}

// assertBlocks asserts that g.wait blocks: it must still be waiting when a
// short deadline expires, and must then return DeadlineExceeded.
func assertBlocks(t *testing.T, g *gate) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r := recv(t, waitAsync(g, ctx))
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("wait = %+v, want it to block until the deadline", r)
	}
}

func mustPass(t *testing.T, g *gate, wantProbe bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	r := recv(t, waitAsync(g, ctx))
	if r.err != nil || r.probe != wantProbe {
		t.Fatalf("wait = %+v, want (%v, nil)", r, wantProbe)
	}
}

func assertSnapshot(t *testing.T, g *gate, ready bool, breaker string) {
	t.Helper()
	var r bool
	var b string
	bounded(t, "snapshot", func() { r, b = g.snapshot() })
	if r != ready || b != breaker {
		t.Fatalf("snapshot = (%v, %q), want (%v, %q)", r, b, ready, breaker)
	}
}

func reportT(t *testing.T, g *gate, probe bool, result int) {
	t.Helper()
	bounded(t, "report", func() { g.report(probe, result, "k") })
}

// Old names of the evidence the breaker tests feed: a failure here is a
// connection error (the backend's own), a success a normal answer.
const (
	resultFailure = evidenceDown
	resultSuccess = evidenceUp
	resultNeutral = evidenceNone
)

func setReady(t *testing.T, g *gate, ready bool) {
	t.Helper()
	bounded(t, "setReady", func() { g.setReady(ready) })
}

type waitResult struct {
	probe bool
	err   error
}

func waitAsync(g *gate, ctx context.Context) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		p, err := g.wait(ctx)
		ch <- waitResult{p, err}
	}()
	return ch
}

func recv(t *testing.T, ch <-chan waitResult) waitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(bound):
		t.Fatalf("wait did not return within %v (neither released nor ended by its context): the gate is stuck", bound)
		return waitResult{}
	}
}

func TestGateOpensAfterThreshold(t *testing.T) {
	g := newGate(3, time.Hour, true, slog.New(slog.DiscardHandler))
	assertSnapshot(t, g, true, BreakerClosed)
	mustPass(t, g, false)

	reportT(t, g, false, resultFailure)
	reportT(t, g, false, resultFailure)
	assertSnapshot(t, g, true, BreakerClosed)
	mustPass(t, g, false)

	reportT(t, g, false, resultFailure)
	assertSnapshot(t, g, true, BreakerOpen)
	assertBlocks(t, g)
}

func TestGateSuccessResetsCount(t *testing.T) {
	g := newGate(3, time.Hour, true, slog.New(slog.DiscardHandler))
	reportT(t, g, false, resultFailure)
	reportT(t, g, false, resultFailure)
	reportT(t, g, false, resultSuccess)
	reportT(t, g, false, resultFailure)
	reportT(t, g, false, resultFailure)
	assertSnapshot(t, g, true, BreakerClosed)
	mustPass(t, g, false)
	// A neutral result is no verdict: it neither resets nor counts.
	reportT(t, g, false, resultNeutral)
	assertSnapshot(t, g, true, BreakerClosed)
	reportT(t, g, false, resultFailure)
	assertSnapshot(t, g, true, BreakerOpen)
}

func TestGateHalfOpenSingleProbe(t *testing.T) {
	// Flake fixed: with a 20 ms cooldown, a stall of 20 ms between the
	// report and the snapshot made snapshot say half_open; the breaker opens
	// for an hour and the test ends the cooldown itself.
	g := newGate(1, time.Hour, true, slog.New(slog.DiscardHandler))
	reportT(t, g, false, resultFailure)
	assertSnapshot(t, g, true, BreakerOpen)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := waitAsync(g, ctx), waitAsync(g, ctx)
	assertBlocks(t, g)

	// The cooldown now ends 20 ms from now; the broadcast makes the waiters
	// read the new openUntil (they wait on its timer, as on a real open).
	bounded(t, "shortening cooldown", func() {
		g.mu.Lock()
		g.openUntil = time.Now().Add(20 * time.Millisecond)
		g.broadcast()
		g.mu.Unlock()
	})

	// After the cooldown exactly one waiter gets the probe token.
	var first waitResult
	var other <-chan waitResult
	select {
	case first = <-a:
		other = b
	case first = <-b:
		other = a
	case <-time.After(bound):
		t.Fatal("no waiter got through after the cooldown: the gate is stuck")
	}
	if first.err != nil || !first.probe {
		t.Fatalf("first waiter = %+v, want the probe token", first)
	}
	assertSnapshot(t, g, true, BreakerHalfOpen)
	select {
	case r := <-other:
		t.Fatalf("second waiter got through during the probe: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	assertBlocks(t, g)

	// Probe success closes the breaker and releases the other waiter.
	reportT(t, g, true, resultSuccess)
	if r := recv(t, other); r.err != nil || r.probe {
		t.Fatalf("second waiter = %+v, want (false, nil)", r)
	}
	assertSnapshot(t, g, true, BreakerClosed)
	mustPass(t, g, false)
}

func TestGateProbeFailureReopens(t *testing.T) {
	g := newGate(2, 10*time.Millisecond, true, slog.New(slog.DiscardHandler))
	reportT(t, g, false, resultFailure)
	reportT(t, g, false, resultFailure)
	mustPass(t, g, true) // blocks for the cooldown, then takes the probe
	assertSnapshot(t, g, true, BreakerHalfOpen)

	bounded(t, "setting cooldown", func() {
		g.mu.Lock()
		g.cooldown = time.Hour // keep the reopened breaker open for the assertions
		g.mu.Unlock()
	})
	reportT(t, g, true, resultFailure)
	assertSnapshot(t, g, true, BreakerOpen)
	assertBlocks(t, g)

	// Once the cooldown is over it is half-open again (snapshot sees it
	// before any waiter does), and a new probe may go.
	bounded(t, "ending cooldown", func() {
		g.mu.Lock()
		g.openUntil = time.Now().Add(-time.Millisecond)
		g.mu.Unlock()
	})
	assertSnapshot(t, g, true, BreakerHalfOpen)
	mustPass(t, g, true)
	reportT(t, g, true, resultSuccess)
	assertSnapshot(t, g, true, BreakerClosed)
}

func TestGateNeutralProbeHandsTokenOn(t *testing.T) {
	g := newGate(1, time.Millisecond, true, slog.New(slog.DiscardHandler))
	reportT(t, g, false, resultFailure)
	mustPass(t, g, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other := waitAsync(g, ctx)
	// An abandoned probe gives the token to another waiter; the breaker
	// stays half-open.
	reportT(t, g, true, resultNeutral)
	if r := recv(t, other); r.err != nil || !r.probe {
		t.Fatalf("waiter after abandoned probe = %+v, want the probe token", r)
	}
	assertSnapshot(t, g, true, BreakerHalfOpen)
}

func TestGateReadiness(t *testing.T) {
	g := newGate(5, time.Hour, false, slog.New(slog.DiscardHandler))
	assertSnapshot(t, g, false, BreakerClosed)
	assertBlocks(t, g)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w1, w2 := waitAsync(g, ctx), waitAsync(g, ctx)
	select {
	case r := <-w1:
		t.Fatalf("waiter passed an unready gate: %+v", r)
	case r := <-w2:
		t.Fatalf("waiter passed an unready gate: %+v", r)
	case <-time.After(20 * time.Millisecond):
	}
	setReady(t, g, true)
	for _, w := range []<-chan waitResult{w1, w2} {
		if r := recv(t, w); r.err != nil || r.probe {
			t.Fatalf("waiter after setReady(true) = %+v, want (false, nil)", r)
		}
	}
	assertSnapshot(t, g, true, BreakerClosed)

	setReady(t, g, false)
	assertSnapshot(t, g, false, BreakerClosed)
	assertBlocks(t, g)
	w3 := waitAsync(g, ctx)
	setReady(t, g, true)
	if r := recv(t, w3); r.err != nil || r.probe {
		t.Fatalf("waiter after setReady(true) = %+v, want (false, nil)", r)
	}
}

func TestGateUnreadyOpenBreaker(t *testing.T) {
	// Unready and open: readiness alone does not let waiters through.
	g := newGate(1, time.Hour, true, slog.New(slog.DiscardHandler))
	reportT(t, g, false, resultFailure)
	setReady(t, g, false)
	assertSnapshot(t, g, false, BreakerOpen)
	setReady(t, g, true)
	assertSnapshot(t, g, true, BreakerOpen)
	assertBlocks(t, g)
}

func TestGateWaitCancelled(t *testing.T) {
	g := newGate(5, time.Hour, false, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	w := waitAsync(g, ctx)
	cancel()
	if r := recv(t, w); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled wait = %+v, want context.Canceled", r)
	}
}

// TestGatePoisonKeyNeverOpens pins the bug where five requests the backend
// always answered 503 opened the partition breaker again and again and an
// unrelated key waited 7 minutes: 5xx from one key is that key's problem.
func TestGatePoisonKeyNeverOpens(t *testing.T) {
	g := newGate(3, time.Hour, true, slog.New(slog.DiscardHandler))
	for range 20 {
		g.report(false, evidenceKey, "poison")
	}
	assertSnapshot(t, g, true, BreakerClosed)
	// 429 is the caller's throttle, not an outage.
	for range 20 {
		g.report(false, evidenceNone, "throttled")
	}
	assertSnapshot(t, g, true, BreakerClosed)
	mustPass(t, g, false)
}

// TestGateDistinctKeysOpen: 5xx from several distinct keys with no normal
// answer between them is evidence the backend is down; a normal answer
// clears it.
func TestGateDistinctKeysOpen(t *testing.T) {
	g := newGate(3, time.Hour, true, slog.New(slog.DiscardHandler))
	g.report(false, evidenceKey, "a")
	g.report(false, evidenceKey, "b")
	g.report(false, evidenceUp, "c")
	g.report(false, evidenceKey, "a")
	g.report(false, evidenceKey, "b")
	assertSnapshot(t, g, true, BreakerClosed)
	g.report(false, evidenceKey, "d")
	assertSnapshot(t, g, true, BreakerOpen)
}

// TestCheckClaim: an absent X-Partition is taken as it is; a claim of
// another partition, another count, or an unreadable one disagrees.
func TestCheckClaim(t *testing.T) {
	want := Claim{Partition: 1, Count: 3}
	for header, disagrees := range map[string]bool{
		"": false, "1/3": false, " 1/3 ": false,
		"0/3": true, "1/2": true, "2/3": true, "1/1": true, "1": true, "a/b": true, "1/3/5": true, "-1/3": true,
	} {
		if got := checkClaim(header, want); (got != "") != disagrees {
			t.Errorf("checkClaim(%q) = %q, want disagreement %v", header, got, disagrees)
		}
	}
	if want.String() != "1/3" {
		t.Errorf("String() = %q", want.String())
	}
}
