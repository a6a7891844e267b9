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
// the pod is sized for. The limit (buffer.SoftMemoryLimit) sits above what
// the queue keeps live under sustained writes: a limit of 192 MiB once sat
// below it, the collector ran back to back and a delivering edge fell from
// 7,865 to 3,323 req/s (docs/benchmarks.md, "Sustained load").
const (
	defaultGCPercent   = 400
	defaultMemoryLimit = buffer.SoftMemoryLimit
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
