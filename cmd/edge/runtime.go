package main

import (
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/flowedge/flowedge/internal/buffer"
)

// Garbage-collector defaults for `edge run`, used unless GOGC / GOMEMLIMIT
// are set in the environment (which then win, as usual for Go programs).
//
// The edge allocates per request (headers, bodies, records) and keeps little
// live beyond its queue: with Go's default GOGC=100 a quarter of the relay
// path's CPU went to the collector. GOGC=400 collects a quarter as often; the
// soft memory limit makes the collector work harder only when the heap
// approaches it, so a large backlog or a burst cannot push the heap past what
// the pod is sized for. The limit sits requestHeap above what the queue keeps
// live under sustained writes (buffer.HeapReserve). A limit of 192 MiB once
// sat below what the queue kept live: the collector ran back to back and a
// delivering edge fell from 9,000 to 3,100 req/s (docs/benchmarks.md).
const (
	defaultGCPercent   = 400
	requestHeap        = 128 << 20 // requests in flight and garbage between collections
	defaultMemoryLimit = buffer.HeapReserve + requestHeap
)

// tuneRuntime applies the defaults and logs what is in effect.
func tuneRuntime(log *slog.Logger) {
	gc, limit := os.Getenv("GOGC"), "GOMEMLIMIT from the environment"
	if gc == "" {
		debug.SetGCPercent(defaultGCPercent)
		gc = strconv.Itoa(defaultGCPercent) + " (default)"
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
		limit = "default"
	}
	log.Info("go runtime", "gogc", gc,
		"memory_limit_bytes", debug.SetMemoryLimit(-1), "memory_limit_source", limit)
}
