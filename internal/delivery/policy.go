package delivery

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/flowedge/flowedge/internal/httpx"
	"github.com/flowedge/flowedge/internal/metrics"
)

// classify names an attempt's outcome (a metrics.Attempt* value) and says
// whether it is retryable. Final: 2xx/3xx, 4xx but 408/421/429, and 501.
// Retryable: connection errors and timeouts, 408, 429, 5xx but 501.
// 421 (the backend does not own the key) is final and goes to the dead
// letters at once: retrying the same backend cannot help.
func classify(resp *http.Response, err error) (outcome string, retry bool) {
	if err != nil || resp == nil {
		return metrics.AttemptError, true
	}
	switch c := resp.StatusCode; {
	case c < 400:
		return metrics.AttemptOK, false
	case c == http.StatusMisdirectedRequest:
		return metrics.AttemptMisroute, false
	case c == http.StatusRequestTimeout, c == http.StatusTooManyRequests:
		return metrics.AttemptRetry, true
	case c == http.StatusNotImplemented:
		return metrics.AttemptRejected, false
	case c >= 500:
		return metrics.AttemptRetry, true
	default:
		return metrics.AttemptRejected, false
	}
}

// backoff is exponential backoff with full jitter: a uniformly random wait
// in [0, min(max, initial·2^(attempts-1))], where attempts counts the failed
// attempts so far (1 after the first). A Retry-After header on resp
// (seconds or an HTTP date) is honoured, capped at maxRetryAfter, and wins
// over a shorter jittered wait.
func backoff(initial, max, maxRetryAfter time.Duration, attempts int, resp *http.Response, now time.Time) time.Duration {
	ceiling := max
	if attempts < 1 {
		attempts = 1
	}
	if shift := attempts - 1; shift < 62 {
		if d := initial << shift; d > 0 && d < max {
			ceiling = d
		}
	}
	wait := time.Duration(rand.Int64N(int64(ceiling) + 1))
	if ra, ok := retryAfter(resp, now); ok {
		if ra > maxRetryAfter {
			ra = maxRetryAfter
		}
		if ra > wait {
			wait = ra
		}
	}
	return wait
}

// retryAfter parses a Retry-After header (httpx.RetryAfter, at most a day).
func retryAfter(resp *http.Response, now time.Time) (time.Duration, bool) {
	if resp == nil {
		return 0, false
	}
	return httpx.RetryAfter(resp.Header.Get("Retry-After"), now, 24*time.Hour)
}

// Verdicts of decide.
const (
	verdictFinal = iota // delivered or rejected: acknowledge and keep the outcome
	verdictRetry        // back off this record (its key alone) and try again
	verdictDead         // move to the dead letters now
)

// policy is the retry policy of an engine: the [retry] settings.
type policy struct {
	initial, max, maxRetryAfter, maxDuration time.Duration
	maxAttempts                              int // 0 = unlimited
}

// decide says what becomes of a record after an attempt: attempts counts
// the attempts made so far including this one, receivedAt is when the edge
// accepted it. For verdictRetry it returns the wait before the next attempt
// (exponential backoff with full jitter, a capped Retry-After honoured);
// for verdictDead the reason. It does no I/O: it is the retry predicate and
// the backoff of go-retryablehttp's DefaultRetryPolicy/DefaultBackoff, with
// the edge's own rules (421 dead at once, Retry-After capped, attempt and
// age limits).
func (p policy) decide(resp *http.Response, err error, attempts int, receivedAt, now time.Time) (verdict int, wait time.Duration, reason string) {
	outcome, retry := classify(resp, err)
	if outcome == metrics.AttemptMisroute {
		return verdictDead, 0, errMisdirected.Error()
	}
	if !retry {
		return verdictFinal, 0, ""
	}
	last := attemptError(resp, err)
	if p.maxAttempts > 0 && attempts >= p.maxAttempts {
		return verdictDead, 0, "giving up after " + strconv.Itoa(attempts) + " attempt(s): " + last
	}
	if now.Sub(receivedAt) >= p.maxDuration {
		return verdictDead, 0, "giving up after " + p.maxDuration.String() + " and " + strconv.Itoa(attempts) + " attempt(s): " + last
	}
	return verdictRetry, backoff(p.initial, p.max, p.maxRetryAfter, attempts, resp, now), last
}

// Evidence an attempt gives about the backend itself (not the request),
// fed to the partition's gate.
const (
	evidenceNone = iota // no verdict on the backend (429, abandoned attempt)
	evidenceUp          // the backend answered normally
	evidenceKey         // 5xx or timeout: maybe the request, maybe the backend
	evidenceDown        // connection error: the backend is not there
)

// evidenceOf classifies an attempt for the breaker. A 429 is the caller's
// throttle and an answer 2xx-4xx proves the backend is up; a 5xx or a
// timeout may be the request's own fault (a poison request), so it counts
// only together with other keys' failures; a connection error (refused,
// reset, no answer) is the backend's.
func evidenceOf(resp *http.Response, err error) int {
	if err != nil || resp == nil {
		var ne net.Error
		if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
			return evidenceKey
		}
		return evidenceDown
	}
	switch c := resp.StatusCode; {
	case c == http.StatusTooManyRequests:
		return evidenceNone
	case c >= 500 && c != http.StatusNotImplemented:
		return evidenceKey
	default:
		return evidenceUp
	}
}

// attemptError describes a failed attempt.
func attemptError(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	if resp == nil {
		return "no answer"
	}
	return "backend answered " + strconv.Itoa(resp.StatusCode)
}
