package server

import (
	"context"
	"net"
	"testing"
	"time"
)

// A drain does not wait for connections that never sent a request: they
// are closed at once, so Shutdown finishes well within a deadline that
// http.Server's own 5 s wait for such connections would overrun. A request
// under way on another connection is still answered.
func TestShutdownClosesSilentConnections(t *testing.T) {
	b := newBackend(t, "b0")
	e := startEdge(t, testConfig(t, b))

	silent, err := net.Dial("tcp", e.PublicAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	eventually(t, 15*time.Second, "the silent connection to be tracked", func() bool {
		e.fresh.mu.Lock()
		defer e.fresh.mu.Unlock()
		return len(e.fresh.conns) == 1
	})
	resp := send(t, e, "POST", "/api/v1/events", "k1", `{"n":1}`, nil)
	resp.Body.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with a silent connection open: %v (it waited for that connection)", err)
	}
	silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); err == nil {
		t.Fatalf("silent connection still open after the drain (read %d bytes)", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("silent connection still open after the drain (read timed out)")
	}
}
