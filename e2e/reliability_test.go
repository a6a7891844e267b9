package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/partition"
)

// TestReliability runs every scenario against the real binaries, one
// scenario at a time (the machine it runs on has few cores), each on a
// fresh stack of three api-flow backends (four after the resize) and one
// edge, with batch delivery, with request delivery and with request
// delivery pipelined 8 deep (FLOWEDGE_E2E_PROTOCOL=batch|request|pipeline
// runs one).
func TestReliability(t *testing.T) {
	if testing.Short() {
		t.Skip("the end-to-end reliability suite builds the edge and api binaries and runs them for a few minutes under load and faults; it runs without -short (make test, make reliability)")
	}
	built := buildBinaries(t, t.TempDir())
	protocols := []string{"batch", "request", "pipeline"}
	if p := os.Getenv("FLOWEDGE_E2E_PROTOCOL"); p != "" {
		protocols = []string{p} // one delivery protocol only
	}
	for _, proto := range protocols {
		bins := built
		bins.protocol = proto
		t.Run(proto, func(t *testing.T) {
			t.Run("stickiness", func(t *testing.T) { testStickiness(t, bins) })
			t.Run("backend-sigkill", func(t *testing.T) { testBackendKill(t, bins) })
			t.Run("backend-hang", func(t *testing.T) { testBackendHang(t, bins) })
			t.Run("backend-slow-network", func(t *testing.T) { testBackendSlowNetwork(t, bins) })
			t.Run("edge-sigkill-x5", func(t *testing.T) { testEdgeKill(t, bins) })
			t.Run("edge-sigterm", func(t *testing.T) { testEdgeTerm(t, bins) })
			t.Run("buffer-full", func(t *testing.T) { testBufferFull(t, bins) })
			t.Run("misconfigured", func(t *testing.T) { testMisconfigured(t, bins) })
			t.Run("resize", func(t *testing.T) { testResize(t, bins) })
		})
	}
}

// Bounds shared by the scenarios: generous for a busy 2-core machine,
// each still a few times what a run takes there.
const (
	loadTimeout  = 3 * time.Minute  // a whole load
	drainTimeout = 90 * time.Second // the edge's queue to empty after the load
	stepTimeout  = time.Minute      // a load to reach the count a fault waits for
)

// processIDs returns n process ids prefix-0000, prefix-0001, …
func processIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return ids
}

// processIDsWhere returns n process ids for which keep holds.
func processIDsWhere(prefix string, n int, keep func(pid string) bool) []string {
	var ids []string
	for i := 0; len(ids) < n; i++ {
		if pid := fmt.Sprintf("%s-%05d", prefix, i); keep(pid) {
			ids = append(ids, pid)
		}
	}
	return ids
}

// waitAcked waits until the load has n acknowledged requests; a load that
// ends first is a mistake of the scenario's sizing.
func waitAcked(t *testing.T, l *load, n int) {
	t.Helper()
	waitFor(t, stepTimeout, fmt.Sprintf("%d acknowledged requests", n), func() bool {
		if l.ackedCount() >= n {
			return true
		}
		if l.finished() {
			t.Fatalf("the load ended with %d acknowledged, before reaching %d: %s", l.ackedCount(), n, l.stats())
		}
		return false
	})
}

// finish waits for the load to end by itself and the edge to drain, and
// measures.
func finish(t *testing.T, s *stack, l *load, name string, began time.Time, alsoOwed map[string]bool) figures {
	t.Helper()
	waitFor(t, loadTimeout, "the load to finish", l.finished)
	drain := s.waitDrained(drainTimeout)
	f := s.measure(name, l, alsoOwed)
	f.add("drain", drain.Round(10*time.Millisecond))
	f.add("duration", time.Since(began).Round(100*time.Millisecond))
	return f
}

// requireAllAcknowledged fails unless every request the clients made was
// acknowledged in the end: the faults delayed clients, none failed one.
func requireAllAcknowledged(t *testing.T, f figures, l *load) {
	t.Helper()
	if st := l.stats(); st.acked != st.sent || st.gaveUp != 0 {
		t.Errorf("clients gave up on %d of %d requests (last connection error %q)\n%s", st.gaveUp, st.sent, st.lastErr, f.line())
	}
}

// Scenario 1: 5,000 requests over 500 processes, no fault. Every process's
// events are on exactly the backend `edge route` names, in order, none lost.
func testStickiness(t *testing.T, bins binaries) {
	began := time.Now()
	s := newStack(t, bins, stackOptions{})
	l := startLoad(s.publicURL(), loadOptions{procs: processIDs("sticky", 500), perProc: 10})
	f := finish(t, s, l, "stickiness", began, nil)
	f.report(t)
	f.requireIntact(t)
	requireAllAcknowledged(t, f, l)
	if f.sent != 5000 || f.delivered != 5000 {
		t.Errorf("want 5000 sent and delivered\n%s", f.line())
	}
}

// Scenario 2: a backend SIGKILLed under load and restarted 5 s later on
// the same data dir (and port). The edge holds its partition meanwhile.
func testBackendKill(t *testing.T, bins binaries) {
	began := time.Now()
	s := newStack(t, bins, stackOptions{})
	l := startLoad(s.publicURL(), loadOptions{procs: processIDs("bkill", 300), perProc: 20, rate: 400})
	waitAcked(t, l, 1200)
	s.killBackend(1)
	before := l.ackedCount()
	time.Sleep(5 * time.Second) // the outage: a fixed span, not a wait for a condition
	during := l.ackedCount() - before
	s.restartBackend(1, partitions)
	f := finish(t, s, l, "backend-sigkill", began, nil)
	f.add("outage", "5s")
	f.add("acked_during_outage", during)
	f.report(t)
	f.requireIntact(t)
	requireAllAcknowledged(t, f, l)
	if during == 0 {
		t.Errorf("the edge acknowledged nothing while a backend was down\n%s", f.line())
	}
}

// Scenario 3a: a backend hangs (SIGSTOP) for 4 s under load, then goes on
// (SIGCONT). Attempts to it time out and are retried; nothing lost or
// doubled by the attempts the frozen backend finishes after it resumes.
func testBackendHang(t *testing.T, bins binaries) {
	began := time.Now()
	s := newStack(t, bins, stackOptions{})
	l := startLoad(s.publicURL(), loadOptions{procs: processIDs("hang", 300), perProc: 16, rate: 400})
	waitAcked(t, l, 1200)
	b := s.backends[2].proc
	b.signal(t, syscall.SIGSTOP)
	t.Cleanup(func() { _ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGCONT) })
	time.Sleep(4 * time.Second) // the hang
	b.signal(t, syscall.SIGCONT)
	f := finish(t, s, l, "backend-hang", began, nil)
	f.add("hang", "4s")
	f.report(t)
	f.requireIntact(t)
	requireAllAcknowledged(t, f, l)
}

// Scenario 3b: one backend behind toxiproxy (in this process) while the
// load runs: 3 s of 300±100 ms latency on the way to the backend, 3 s in
// which half of the connections are reset as the backend's answer arrives
// (the effect happened, the edge never hears of it), 3 s of a black hole
// (nothing gets through, attempts time out), then a clean network.
//
// respond = "accept" and few processes (60, each sending about 7 requests
// a second) so that each process has several requests queued at the edge
// while its backend is slow: per-key order is then the edge's doing, not
// the client's pace. (With ordering = "none" this scenario shows
// max_reorder > 0.)
func testBackendSlowNetwork(t *testing.T, bins binaries) {
	began := time.Now()
	s := newStack(t, bins, stackOptions{proxied: 1, respond: "accept"}) // api-flow-0 behind the proxy
	l := startLoad(s.publicURL(), loadOptions{procs: processIDs("slow", 60), perProc: 150, rate: 400})
	phases := []struct{ name, spec string }{
		{"latency", `{"name":"latency","type":"latency","stream":"upstream","attributes":{"latency":300,"jitter":100}}`},
		{"reset", `{"name":"reset","type":"reset_peer","stream":"downstream","toxicity":0.5,"attributes":{"timeout":0}}`},
		{"blackhole", `{"name":"blackhole","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`},
	}
	next := 500
	var done []string
	for _, ph := range phases {
		waitAcked(t, l, next)
		s.addToxic(ph.spec)
		time.Sleep(3 * time.Second) // the fault's span
		s.removeToxic(ph.name)
		done = append(done, ph.name+"=3s")
		next = l.ackedCount() + 300
	}
	f := finish(t, s, l, "backend-slow-network", began, nil)
	f.add("toxics", strings.Join(done, ","))
	f.report(t)
	f.requireIntact(t)
	requireAllAcknowledged(t, f, l)
	if s.failedAttempts() == 0 {
		t.Errorf("no delivery attempt failed: the toxics did not bite\n%s", f.line())
	}
}

// Scenario 4: the edge SIGKILLed 5 times under load, each time restarted at
// once on its buffer dir. respond = "accept" and api-flow-1 down during the
// kills, so that at each kill a backlog of acknowledged requests is queued,
// several per process of partition 1 and in order (the figures show how many
// just before each kill); the other partitions flow, with attempts in flight
// at each kill. api-flow-1 comes back after the last restart.
func testEdgeKill(t *testing.T, bins binaries) {
	began := time.Now()
	s := newStack(t, bins, stackOptions{respond: "accept"})
	l := startLoad(s.publicURL(), loadOptions{procs: processIDs("ekill", 200), perProc: 40, rate: 500})
	var at, queued []string
	var slowest time.Duration
	s.killBackend(1)
	for range 5 {
		waitAcked(t, l, l.ackedCount()+1000)
		queued = append(queued, fmt.Sprint(s.queued()))
		s.edge.proc.signal(t, syscall.SIGKILL)
		s.edge.proc.wait(t, 10*time.Second)
		at = append(at, fmt.Sprint(l.ackedCount()))
		s.startEdge()
		slowest = max(slowest, s.edge.startupToListened)
	}
	s.restartBackend(1, partitions)
	f := finish(t, s, l, "edge-sigkill-x5", began, nil)
	f.add("kills_at_acked", strings.Join(at, ","))
	f.add("queued_before_kills", strings.Join(queued, ","))
	f.add("slowest_restart", slowest.Round(time.Millisecond))
	f.report(t)
	f.requireIntact(t)
	requireAllAcknowledged(t, f, l)
}

// Scenario 5: SIGTERM to the edge under load while one backend is down, so
// that a backlog is queued: the edge exits 0, and the next start delivers
// the backlog once the backend is back.
func testEdgeTerm(t *testing.T, bins binaries) {
	began := time.Now()
	s := newStack(t, bins, stackOptions{})
	l := startLoad(s.publicURL(), loadOptions{procs: processIDs("eterm", 300), perProc: 20, rate: 400})
	waitAcked(t, l, 800)
	s.killBackend(2)
	waitAcked(t, l, l.ackedCount()+600)
	term := time.Now()
	s.edge.proc.signal(t, syscall.SIGTERM)
	code := s.edge.proc.wait(t, 30*time.Second)
	stopTook := time.Since(term)
	l.stopAndWait() // the clients give up on what the stopped edge did not answer
	s.startEdge()
	backlog := s.queued()
	s.restartBackend(2, partitions)
	f := finish(t, s, l, "edge-sigterm", began, nil)
	f.add("exit_code", code)
	f.add("stop_took", stopTook.Round(time.Millisecond))
	f.add("queued_at_restart", backlog)
	f.report(t)
	f.requireIntact(t)
	if code != 0 {
		t.Errorf("SIGTERM: the edge exited %d, want 0", code)
	}
	if backlog == 0 {
		t.Errorf("nothing was queued when the edge restarted: the scenario did not test delivery after a restart\n%s", f.line())
	}
}

// Scenario 6: a small queue (128 KiB) in front of a dead backend: the edge
// answers 503 + Retry-After once full; the clients retry as told and all
// succeed once the backend is back and the queue drains.
func testBufferFull(t *testing.T, bins binaries) {
	began := time.Now()
	s := newStack(t, bins, stackOptions{respond: "accept", maxBytes: 128 << 10})
	s.killBackend(0)
	pids := processIDsWhere("full", 100, func(pid string) bool { return partition.OfString(pid, partitions) == 0 })
	l := startLoad(s.publicURL(), loadOptions{procs: pids, perProc: 10, workers: 32})
	waitFor(t, stepTimeout, "300 answers 503 (queue full)", func() bool { return l.code(http.StatusServiceUnavailable) >= 300 })
	queuedWhenFull := s.queued()
	s.restartBackend(0, partitions)
	f := finish(t, s, l, "buffer-full", began, nil)
	f.add("max_bytes", 128<<10)
	f.add("queued_when_full", queuedWhenFull)
	f.report(t)
	f.requireIntact(t)
	requireAllAcknowledged(t, f, l)
	if st := l.stats(); st.codes[http.StatusServiceUnavailable] == 0 || st.noRetryAfter != 0 {
		t.Errorf("want 503 answers, each with Retry-After: %d answers 503, %d without Retry-After", st.codes[http.StatusServiceUnavailable], st.noRetryAfter)
	}
}

// Scenario 7: misconfigured backends are held, never sent to. First the
// edge lists api-flow-1 and api-flow-2 in each other's place; each claims
// its own partition in its readiness answer (X-Partition), so the edge
// holds both partitions (misconfigured, /health/health 503) and their
// writes stay queued while partition 0's are delivered. Started again with
// the right order, it delivers them to their owners. Then api-flow-2 is
// restarted with -partitions 4 (another count): its partition is held the
// same way until it runs with -partitions 3 again. No request is refused
// with 421, none is dead-lettered.
func testMisconfigured(t *testing.T, bins binaries) {
	began := time.Now()
	s := newStack(t, bins, stackOptions{order: []int{0, 2, 1}})
	on := func(prefix string, p, n int) []string {
		return processIDsWhere(prefix, n, func(pid string) bool { return partition.OfString(pid, partitions) == p })
	}
	held := append(on("order", 1, 10), on("order", 2, 10)...)
	l := startLoad(s.publicURL(), loadOptions{procs: append(on("order", 0, 10), held...), perProc: 1, workers: 8})
	waitFor(t, loadTimeout, "the load to finish", l.finished)
	waitFor(t, drainTimeout, "partition 0 to deliver its writes", func() bool { return s.partitionViews()[0].Queued == 0 })

	// held: the views, nothing sent, the health check.
	requireHeld := func(claims map[int]string, queued int) {
		t.Helper()
		n := 0
		for _, v := range s.partitionViews() {
			want, bad := claims[v.Partition]
			if v.Misconfigured != bad || v.Claim != want || (bad && v.Ready) {
				t.Fatalf("partition %d: misconfigured %v, claim %q, ready %v; want misconfigured %v, claim %q", v.Partition, v.Misconfigured, v.Claim, v.Ready, bad, want)
			}
			if bad {
				n += v.Queued
			}
		}
		if n != queued {
			t.Fatalf("%d records queued on the misconfigured partitions, want %d", n, queued)
		}
		if d, m := len(s.deadLetters()), s.misroutedAttempts(); d != 0 || m != 0 {
			t.Fatalf("%d dead letters, %d attempts answered 421: a misconfigured backend was sent requests", d, m)
		}
		if code, body := s.health(); code != http.StatusServiceUnavailable || !strings.Contains(body, `"misconfigured"`) {
			t.Fatalf("/health/health: %d %s, want 503 naming the misconfigured backends", code, body)
		}
	}
	requireHeld(map[int]string{1: "2/3", 2: "1/3"}, len(held))

	// The order mended: the edge restarts on its queue.
	s.edge.proc.signal(t, syscall.SIGTERM)
	if code := s.edge.proc.wait(t, 30*time.Second); code != 0 {
		t.Errorf("SIGTERM: the edge exited %d, want 0", code)
	}
	s.opt.order = nil
	s.startEdge()
	f := finish(t, s, l, "misconfigured-order", began, nil)
	f.add("held", len(held))
	f.add("dead_letters", len(s.deadLetters()))
	f.add("misrouted_attempts", s.misroutedAttempts())
	f.report(t)
	f.requireIntact(t)
	requireAllAcknowledged(t, f, l)

	// Another count: api-flow-2 with -partitions 4.
	began = time.Now()
	b := s.backends[2].proc
	b.signal(t, syscall.SIGTERM)
	b.wait(t, 30*time.Second)
	s.restartBackend(2, partitions+1)
	waitFor(t, stepTimeout, "partition 2 to show misconfigured", func() bool { return s.partitionViews()[2].Misconfigured })
	held = on("count", 2, 10)
	l = startLoad(s.publicURL(), loadOptions{procs: held, perProc: 1, workers: 8})
	waitFor(t, loadTimeout, "the load to finish", l.finished)
	requireHeld(map[int]string{2: "2/4"}, len(held))
	b = s.backends[2].proc
	b.signal(t, syscall.SIGTERM)
	b.wait(t, 30*time.Second)
	s.restartBackend(2, partitions)
	f = finish(t, s, l, "misconfigured-count", began, nil)
	f.add("held", len(held))
	f.add("dead_letters", len(s.deadLetters()))
	f.add("misrouted_attempts", s.misroutedAttempts())
	f.report(t)
	f.requireIntact(t)
	requireAllAcknowledged(t, f, l)
	if d, m := len(s.deadLetters()), s.misroutedAttempts(); d != 0 || m != 0 {
		t.Errorf("%d dead letters, %d attempts answered 421", d, m)
	}
	if code, body := s.health(); code != http.StatusOK {
		t.Errorf("/health/health after the fix: %d %s", code, body)
	}
}

// Scenario 8: the partition count changed from 3 to 4 with a backlog queued.
// All three backends are SIGKILLed, so the edge (respond = "accept") queues
// the whole load without delivering any of it; then it is SIGTERMed and
// restarted on its buffer dir with count = 4 and a fourth backend, every
// backend now running with -partitions 4 (api-flow-0..2 on their data dirs,
// api-flow-3 on a new one). The backends are still down when the edge
// starts, so its queue can be read as the restart left it: each record must
// already be in the partition that owns its key under count 4 (a key that
// stayed where it was would meet a backend answering 421 and be
// dead-lettered). Then the backends come back and the backlog drains.
func testResize(t *testing.T, bins binaries) {
	const (
		procs   = 300
		perProc = 10
		newSize = partitions + 1
	)
	began := time.Now()
	s := newStack(t, bins, stackOptions{respond: "accept"})
	for n := range partitions {
		s.killBackend(n)
	}
	pids := processIDs("resize", procs)
	l := startLoad(s.publicURL(), loadOptions{procs: pids, perProc: perProc})
	waitFor(t, loadTimeout, "the load to finish", l.finished)
	if st := l.stats(); st.acked != procs*perProc || st.codes[http.StatusAccepted] != procs*perProc {
		t.Fatalf("want all %d requests acknowledged with 202 while the backends are down: %s", procs*perProc, st)
	}
	stored := 0
	for _, v := range s.partitionViews() {
		stored += v.Queued // records on disk; in_flight counts attempts under way among them
	}
	if stored != procs*perProc {
		t.Fatalf("%d records queued before the resize, want %d", stored, procs*perProc)
	}

	// Which keys change partition, and where every record must be after it.
	moved := 0
	want := make([]int, newSize) // records per partition under the new count
	for _, pid := range pids {
		p := partition.OfString(pid, newSize)
		want[p] += perProc
		if p != partition.OfString(pid, partitions) {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no process changes partition from 3 to 4: the scenario would test nothing")
	}

	s.edge.proc.signal(t, syscall.SIGTERM)
	if code := s.edge.proc.wait(t, 30*time.Second); code != 0 {
		t.Errorf("SIGTERM: the edge exited %d, want 0", code)
	}
	extra := s.addBackend(newSize) // on a free port, which the edge's new configuration names
	s.killBackend(extra)           // down like the others until the edge has restarted
	s.resize(newSize)
	s.startEdge()

	// The queue as the restart left it (nothing can be delivered yet).
	got := make([]int, newSize)
	var atRestart []string
	for _, v := range s.partitionViews() {
		if v.Partition < 0 || v.Partition >= newSize {
			t.Fatalf("the edge lists partition %d with count = %d", v.Partition, newSize)
		}
		got[v.Partition] = v.Queued
		if v.DeadLetters != 0 {
			t.Errorf("partition %d: %d dead letters right after the resize, want 0", v.Partition, v.DeadLetters)
		}
	}
	for p := range newSize {
		atRestart = append(atRestart, fmt.Sprint(got[p]))
		if got[p] != want[p] {
			t.Errorf("partition %d holds %d records after the resize, want %d (per partition: got %v, want %v)", p, got[p], want[p], got, want)
		}
	}
	route := s.route(pids)
	for _, pid := range pids {
		if route[pid] != partition.OfString(pid, newSize) {
			t.Fatalf("edge route names partition %d for %s, want %d under count = %d", route[pid], pid, partition.OfString(pid, newSize), newSize)
		}
	}

	for n := range newSize {
		s.restartBackend(n, newSize)
	}
	f := finish(t, s, l, "resize", began, nil)
	dead := s.deadLetters()
	misrouted := s.misroutedAttempts()
	f.add("partitions", fmt.Sprintf("%d->%d", partitions, newSize))
	f.add("moved_keys", moved)
	f.add("queued_at_restart", strings.Join(atRestart, "/"))
	f.add("dead_letters", len(dead))
	f.add("misrouted_attempts", misrouted)
	f.report(t)
	f.requireIntact(t)
	requireAllAcknowledged(t, f, l)
	if f.delivered != procs*perProc {
		t.Errorf("want all %d requests delivered\n%s", procs*perProc, f.line())
	}
	if len(dead) != 0 || misrouted != 0 {
		t.Errorf("%d dead letters (first: %+v), %d attempts answered 421: records were sent to a backend that does not own their key\n%s",
			len(dead), dead[:min(len(dead), 1)], misrouted, f.line())
	}
}
