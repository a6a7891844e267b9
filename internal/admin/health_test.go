package admin

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// errThenNil is a queue whose write error clears between two reads, as a
// successful write clears it.
type errThenNil struct {
	Deliveries // not called by readiness
	reads      int
}

func (d *errThenNil) Err() error {
	d.reads++
	if d.reads == 1 {
		return errors.New("disk full")
	}
	return nil
}

// TestReadinessReadsErrOnce: readiness answers from one read of the queue's
// error.
//
// Regression: readiness read Err twice, once to test it and once for its
// text; a write that cleared the error between the two made the second
// nil, and the handler panicked on it.
func TestReadinessReadsErrOnce(t *testing.T) {
	h := &Handler{opt: Options{Deliveries: &errThenNil{}}, mux: http.NewServeMux()}
	rec := httptest.NewRecorder()
	h.readiness(rec, httptest.NewRequest(http.MethodGet, "/health/readiness", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "disk full") {
		t.Fatalf("readiness with a write error: %d %s, want 503 naming it", rec.Code, rec.Body)
	}
}
