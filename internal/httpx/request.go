package httpx

import (
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
)

// RequestID returns the request's X-Request-ID when it is a sane token
// (1–200 visible ASCII characters), else a fresh UUIDv7.
func RequestID(r *http.Request) string {
	if v := r.Header.Get("X-Request-ID"); ValidToken(v, 200) {
		return v
	}
	return uuid.Must(uuid.NewV7()).String()
}

// ValidToken reports whether v is 1..max visible ASCII characters.
func ValidToken(v string, max int) bool {
	if v == "" || len(v) > max {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] <= ' ' || v[i] > '~' {
			return false
		}
	}
	return true
}

// Recorder is a ResponseWriter that remembers the status and the size of
// what a handler wrote. Status is 0 until the handler writes.
type Recorder struct {
	http.ResponseWriter
	Status int   // the status sent; 200 for a body written without WriteHeader
	Bytes  int64 // body bytes written
}

// WriteHeader records the first status and passes it on.
func (w *Recorder) WriteHeader(code int) {
	if w.Status == 0 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200 and counts the bytes.
func (w *Recorder) Write(b []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.Bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *Recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// RetryAfter parses a Retry-After value (RFC 9110 §10.2.3): delay-seconds
// or an HTTP-date. A delay above limit is cut to limit (limit <= 0 means 24
// hours); a date in the past is a wait of 0. ok is false when v is empty or
// neither form (a negative number included).
func RetryAfter(v string, now time.Time, limit time.Duration) (wait time.Duration, ok bool) {
	if v == "" {
		return 0, false
	}
	if limit <= 0 {
		limit = 24 * time.Hour
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > int64(limit/time.Second) {
			return limit, true
		}
		return time.Duration(n) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		wait = max(t.Sub(now), 0)
		if wait > limit {
			wait = limit
		}
		return wait, true
	}
	return 0, false
}
