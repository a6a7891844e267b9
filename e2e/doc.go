// Package e2e is flowedge's end-to-end reliability suite: the real edge and
// api-flow binaries, built once per run, started as separate processes on
// loopback ports with their own data directories, driven by a vegeta load
// and hit by real faults — SIGKILL, SIGSTOP/SIGCONT and SIGTERM of the
// processes, a full edge queue, a slow and failing network (toxiproxy, run
// in the test process), a backend that answers 421 for keys it does not
// own, and a change of the partition count with a backlog queued.
// TestPowerCut adds power cuts: the edge's queue on a FUSE filesystem
// that forgets what was not fsynced (internal/faultfs).
//
// Every scenario measures at the backends what happened to the requests
// the edge acknowledged and prints one line of figures:
//
//	scenario=<name> sent=… acknowledged=… delivered=… duplicates=… lost=… max_reorder=… …
//
// and fails when a guarantee of docs/reliability.md is broken: an
// acknowledged request missing from its backend's event log (lost), an
// effect stored twice (duplicates), a process's events out of the order
// the edge accepted them (max_reorder), or a process's events on a backend
// that does not own it (misplaced).
//
// With FLOWEDGE_E2E_REPORT=FILE the figure lines are also appended to FILE;
// `make reliability` uses that to rewrite the figures of docs/reliability.md.
// The suite takes a few minutes and is skipped, with a message, under
// `go test -short`.
package e2e
