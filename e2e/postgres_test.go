package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/partition"
	"github.com/flowedge/flowedge/internal/testutil/pgtest"
)

// TestPostgres runs scenarios with every backend's state in one shared
// PostgreSQL database (DATABASE_URL, a throwaway server): stickiness and a
// backend SIGKILL as in TestReliability, and a resize from 3 to 4
// partitions with `api partitions set 4` under which every moved process
// keeps its whole history on its new owner.
func TestPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("the end-to-end suite builds the binaries and runs them under load; it runs without -short")
	}
	pg := pgtest.Start(t)
	bins := buildBinaries(t, t.TempDir())
	// Each scenario gets a fresh database; the backends it starts inherit
	// DATABASE_URL from the test's environment.
	on := func(t *testing.T) string {
		url := pg.NewDatabase(t)
		t.Setenv("DATABASE_URL", url)
		return url
	}
	t.Run("stickiness", func(t *testing.T) { on(t); testStickiness(t, bins) })
	t.Run("backend-sigkill", func(t *testing.T) { on(t); testBackendKill(t, bins) })
	t.Run("resize", func(t *testing.T) { testSharedResize(t, bins, on(t)) })
}

// testSharedResize: a load over 300 processes is delivered to three
// backends sharing the database. Then the count goes to 4 the way
// docs/kubernetes.md says: the edge stops, `api partitions set 4`, a fourth
// backend starts, and api-flow-1 is SIGKILLed and started again on an empty
// data directory (its state is in the database); the edge starts again
// with count 4 (its queue is empty: it has drained). A second load over the
// same processes follows. Every process's log, read from the backend that
// owns it under count 4, must hold both loads' events: the first load's in
// its order, then the second's, sequence numbers 1..n without a gap or a
// duplicate, also for the processes that moved.
func testSharedResize(t *testing.T, bins binaries, url string) {
	const (
		procs   = 300
		perProc = 5
		newSize = partitions + 1
	)
	began := time.Now()
	s := newStack(t, bins, stackOptions{})
	pids := processIDs("pgresize", procs)
	moved := 0
	for _, pid := range pids {
		if partition.OfString(pid, newSize) != partition.OfString(pid, partitions) {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no process changes partition from 3 to 4: the scenario would test nothing")
	}
	first := startLoad(s.publicURL(), loadOptions{procs: pids, perProc: perProc})
	f := finish(t, s, first, "pg-resize-before", began, nil)
	f.report(t)
	f.requireIntact(t)
	requireAllAcknowledged(t, f, first)

	s.edge.proc.signal(t, syscall.SIGTERM)
	if code := s.edge.proc.wait(t, 30*time.Second); code != 0 {
		t.Errorf("SIGTERM: the edge exited %d, want 0", code)
	}
	if out := apiPartitions(t, bins, url, "set", fmt.Sprint(newSize)); !strings.Contains(out, fmt.Sprintf("partitions %d epoch 2", newSize)) {
		t.Fatalf("api partitions set %d: %q", newSize, out)
	}
	s.addBackend(newSize)
	s.killBackend(1)
	s.backends[1].dataDir = filepath.Join(s.dir, "api-flow-1-empty")
	if err := os.MkdirAll(s.backends[1].dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	s.restartBackend(1, newSize)
	s.resize(newSize)
	s.startEdge()

	second := startLoad(s.publicURL(), loadOptions{procs: pids, perProc: perProc})
	waitFor(t, loadTimeout, "the second load to finish", second.finished)
	drain := s.waitDrained(drainTimeout)
	if st := second.stats(); st.acked != procs*perProc {
		t.Fatalf("second load: %d of %d acknowledged: %s", st.acked, procs*perProc, st)
	}

	route := s.route(pids)
	movedChecked, gaps, dups, wrong := 0, 0, 0, 0
	var examples []string
	note := func(format string, a ...any) {
		if len(examples) < 10 {
			examples = append(examples, fmt.Sprintf(format, a...))
		}
	}
	for i, pid := range pids {
		owner := route[pid]
		if owner != partition.OfString(pid, newSize) {
			t.Fatalf("edge routes %s to %d, want %d", pid, owner, partition.OfString(pid, newSize))
		}
		var want []string
		for _, l := range []*load{first, second} {
			for _, r := range l.procs[i].reqs {
				want = append(want, r.rid)
			}
		}
		evs, err := s.events(owner, pid)
		if err != nil {
			t.Fatalf("%s on api-flow-%d: %v", pid, owner, err)
		}
		seen := map[string]bool{}
		for j, ev := range evs {
			if ev.Seq != uint64(j+1) {
				gaps++
				note("%s: event %d has seq %d", pid, j, ev.Seq)
			}
			if seen[ev.Data.RID] {
				dups++
				note("%s: request %s stored twice", pid, ev.Data.RID)
			}
			seen[ev.Data.RID] = true
		}
		got := make([]string, len(evs))
		for j, ev := range evs {
			got[j] = ev.Data.RID
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			wrong++
			note("%s on api-flow-%d: %d events, want %d (both loads, in order)", pid, owner, len(got), len(want))
		}
		if partition.OfString(pid, partitions) != owner {
			movedChecked++
		}
	}
	t.Logf("scenario=pg-resize partitions=%d->%d moved=%d checked=%d drain=%s duration=%s gaps=%d duplicates=%d wrong_history=%d",
		partitions, newSize, moved, movedChecked, drain.Round(10*time.Millisecond), time.Since(began).Round(100*time.Millisecond), gaps, dups, wrong)
	if gaps != 0 || dups != 0 || wrong != 0 {
		t.Fatalf("history broken by the resize: gaps=%d duplicates=%d wrong=%d\n%s", gaps, dups, wrong, strings.Join(examples, "\n"))
	}
	if movedChecked != moved {
		t.Fatalf("checked %d moved processes, want %d", movedChecked, moved)
	}
}

// apiPartitions runs `api partitions ARGS` against the database at url and
// returns its output.
func apiPartitions(t *testing.T, bins binaries, url string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bins.api, append([]string{"partitions"}, args...)...)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+url)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("api partitions %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}
