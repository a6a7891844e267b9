package delivery

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flowedge/flowedge/internal/buffer"
)

// TestInterimResponsesSkipped pins a response desync on the worker's own
// HTTP/1.1 connection: a backend's 1xx interim answer (100 Continue for a
// stored "Expect: 100-continue", 103 Early Hints) was read as the record's
// final answer (delivered with status 100), and the real answer stayed in
// the connection's buffer to be read as the NEXT record's answer, so one
// client was relayed another client's response. 1xx answers are skipped
// and a client's Expect is never forwarded.
func TestInterimResponsesSkipped(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Expect") != "" {
			t.Errorf("Expect forwarded to the backend: %q", r.Header.Get("Expect"))
		}
		w.Header().Set("Link", "</a.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		body, _ := io.ReadAll(r.Body)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "answer to %s", body)
	}))
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), 1)
	e := startEngine(t, q, 1, srv, func(o *Options) { o.MaxInFlight = 1 })
	for i := range 3 {
		rec := testRecord("k", 1, fmt.Sprintf("body-%d", i))
		rec.Header = http.Header{"Content-Type": {"text/plain"}, "Expect": {"100-continue"}}
		res := submitWait(t, e, rec)
		want := fmt.Sprintf("answer to body-%d", i)
		if res.Status != buffer.StatusDelivered || res.StatusCode != http.StatusCreated || string(res.Body) != want {
			t.Fatalf("record %d: got %s %d %q, want delivered 201 %q", i, res.Status, res.StatusCode, res.Body, want)
		}
	}
}
