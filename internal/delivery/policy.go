package delivery

import (
	"math/rand/v2"
	"net/http"
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
