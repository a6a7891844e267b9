package admin

import (
	"net/http/pprof"
)

// pprofRoutes serves Go's profiles under /debug/pprof/ behind the admin
// token (open like /edge/v1 when no token is set): the index, named
// profiles (heap, goroutine, allocs, block, mutex, threadcreate), a CPU
// profile (profile?seconds=N), an execution trace (trace?seconds=N),
// cmdline and symbol. The handlers are registered on the admin mux only
// (the package's own registration on http.DefaultServeMux is never
// served).
func (h *Handler) pprofRoutes() {
	h.mux.Handle("GET /debug/pprof/", h.auth(pprof.Index))
	h.mux.Handle("GET /debug/pprof/cmdline", h.auth(pprof.Cmdline))
	h.mux.Handle("GET /debug/pprof/profile", h.auth(pprof.Profile))
	h.mux.Handle("GET /debug/pprof/symbol", h.auth(pprof.Symbol))
	h.mux.Handle("POST /debug/pprof/symbol", h.auth(pprof.Symbol))
	h.mux.Handle("GET /debug/pprof/trace", h.auth(pprof.Trace))
}
