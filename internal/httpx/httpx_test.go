package httpx

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRemoveHopByHop(t *testing.T) {
	h := http.Header{}
	h.Set("Connection", "keep-alive, X-Secret")
	h.Set("X-Secret", "1")
	h.Set("Keep-Alive", "timeout=5")
	h.Set("Transfer-Encoding", "chunked")
	h.Set("Upgrade", "websocket")
	h.Set("Content-Type", "text/plain")
	RemoveHopByHop(h)
	for _, k := range []string{"Connection", "X-Secret", "Keep-Alive", "Transfer-Encoding", "Upgrade"} {
		if h.Get(k) != "" {
			t.Errorf("%s kept", k)
		}
	}
	if h.Get("Content-Type") != "text/plain" {
		t.Error("end-to-end header removed")
	}
}

func TestWriteProblem(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteProblem(rec, Problem{Status: 400, Detail: "missing X-Process-ID", RequestID: "r1"})
	if rec.Code != 400 || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("got %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var p Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Type != "about:blank" || p.Title != "Bad Request" || p.Status != 400 || p.RequestID != "r1" {
		t.Fatalf("problem = %+v", p)
	}
}

func TestClientIP(t *testing.T) {
	for addr, want := range map[string]string{"127.0.0.1:5000": "127.0.0.1", "[::1]:80": "::1", "host": "host"} {
		r := &http.Request{RemoteAddr: addr}
		if got := ClientIP(r); got != want {
			t.Errorf("ClientIP(%q) = %q, want %q", addr, got, want)
		}
	}
}
