package server

import (
	"net"
	"net/http"
	"sync"
)

// freshConns tracks the public listener's connections that have not sent a
// request yet (http.StateNew). http.Server.Shutdown waits for those for up
// to 5 s, as it cannot tell a client about to send from one that never
// will; load balancers and keep-alive pools open such connections ahead of
// use, so a drain would often sit out those 5 s. On drain the edge closes
// them at once, and any that arrive later: nothing was accepted on them, so
// their clients retry elsewhere or later. Connections with a request under
// way are left to Shutdown, which waits for their answers.
type freshConns struct {
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	draining bool
}

func newFreshConns() *freshConns { return &freshConns{conns: map[net.Conn]struct{}{}} }

// track is the http.Server's ConnState hook.
func (f *freshConns) track(c net.Conn, state http.ConnState) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if state != http.StateNew {
		delete(f.conns, c)
		return
	}
	if f.draining {
		c.Close()
		return
	}
	f.conns[c] = struct{}{}
}

// drain closes the connections that are still waiting for a first request,
// and every new one from now on.
func (f *freshConns) drain() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.draining = true
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}
