package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/api"
	"github.com/flowedge/flowedge/internal/api/store"
)

func delay(ms int) map[string]any { return map[string]any{"type": "delay", "ms": ms} }

func event(typ string) map[string]any { return map[string]any{"type": "event", "event_type": typ} }

// TestJobsOrderPerProcess: jobs of one process never overlap and run in
// submission order; the start/end events each job appends come out as
// start(1), end(1), start(2), end(2), … and the recorded start and end
// times do not overlap.
func TestJobsOrderPerProcess(t *testing.T) {
	e := newEnv(t, func(o *api.Options) { o.Workers = 4 })
	wf := e.workflow(event("start"), delay(15), event("end"))
	pids := []string{"proc-a", "proc-b", "proc-c"}
	const perProcess = 6
	jobs := map[string][]api.Job{}
	for i := range perProcess {
		for _, pid := range pids {
			j := e.submit(pid, wf, map[string]any{"n": i})
			if j.Status != api.JobQueued || j.Seq != uint64(i+1) || j.ProcessID != pid {
				t.Fatalf("submitted %+v", j)
			}
			jobs[pid] = append(jobs[pid], j)
		}
	}
	for _, pid := range pids {
		var done []api.Job
		for _, j := range jobs[pid] {
			done = append(done, e.waitJob(j.ID, api.JobSucceeded))
		}
		for i := 1; i < len(done); i++ {
			prev, cur := done[i-1], done[i]
			if !prev.FinishedAt.Before(*cur.StartedAt) && !prev.FinishedAt.Equal(*cur.StartedAt) {
				t.Fatalf("%s: job %d started at %v before job %d finished at %v", pid, cur.Seq, cur.StartedAt, prev.Seq, prev.FinishedAt)
			}
		}
		evs := e.events(pid)
		if len(evs) != 2*perProcess {
			t.Fatalf("%s: %d events, want %d", pid, len(evs), 2*perProcess)
		}
		for i, ev := range evs {
			want, wantType := jobs[pid][i/2].ID, []string{"start", "end"}[i%2]
			if ev.JobID != want || ev.Type != wantType {
				t.Fatalf("%s: event %d is %s of job %s, want %s of job %s", pid, ev.Seq, ev.Type, ev.JobID, wantType, want)
			}
		}
	}
	// The job list of a process is in submission order.
	var l struct{ Items []api.Job }
	must(t, e.do(req{method: "GET", path: "/jobs?process_id=proc-b&limit=4", key: adminKey}), 200).json(t, &l)
	if len(l.Items) != 4 || l.Items[0].ID != jobs["proc-b"][0].ID || l.Items[3].ID != jobs["proc-b"][3].ID {
		t.Fatalf("list: %+v", l.Items)
	}
}

// TestWorkerPoolBounded: with 2 workers, no more than 2 jobs ever overlap,
// whatever the number of processes.
func TestWorkerPoolBounded(t *testing.T) {
	e := newEnv(t, func(o *api.Options) { o.Workers = 2 })
	wf := e.workflow(delay(30))
	var ids []string
	for i := range 6 {
		ids = append(ids, e.submit(fmt.Sprintf("pool-%d", i), wf, nil).ID)
	}
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, id := range ids {
		j := e.waitJob(id, api.JobSucceeded)
		edges = append(edges, edge{*j.StartedAt, +1}, edge{*j.FinishedAt, -1})
	}
	sort.Slice(edges, func(a, b int) bool {
		if edges[a].at.Equal(edges[b].at) {
			return edges[a].delta < edges[b].delta // ends before starts at the same instant
		}
		return edges[a].at.Before(edges[b].at)
	})
	cur, peak := 0, 0
	for _, ed := range edges {
		cur += ed.delta
		peak = max(peak, cur)
	}
	if peak > 2 {
		t.Fatalf("%d jobs ran at once with 2 workers", peak)
	}
}

// TestJobSteps: an http step records the answer; a failing one fails the
// job with the reason and leaves later steps pending; the http step sends
// a stable Idempotency-Key.
func TestJobSteps(t *testing.T) {
	var calls atomic.Int32
	var lastKey atomic.Value
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		lastKey.Store(r.Header.Get("Idempotency-Key"))
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/fail" {
			http.Error(w, "nope", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"echo":%s}`, b)
	}))
	defer target.Close()
	e := newEnv(t)

	ok := e.workflow(map[string]any{"type": "http", "url": target.URL + "/ok"}, event("after-http"))
	j := e.waitJob(e.submit("proc-http", ok, map[string]any{"x": 1}).ID, api.JobSucceeded)
	var res struct {
		Status int
		Body   string
	}
	if err := json.Unmarshal(j.Steps[0].Result, &res); err != nil || res.Status != 200 {
		t.Fatalf("http step result %s (%v)", j.Steps[0].Result, err)
	}
	if lastKey.Load() != j.ID+"/0" {
		t.Fatalf("Idempotency-Key %v, want %s/0", lastKey.Load(), j.ID)
	}
	if j.Steps[1].Status != "succeeded" || j.Runs != 1 {
		t.Fatalf("job %+v", j)
	}

	bad := e.workflow(map[string]any{"type": "http", "method": "PUT", "url": target.URL + "/fail"}, event("never"))
	j = e.waitJob(e.submit("proc-http", bad, nil).ID, api.JobFailed)
	if j.Steps[0].Status != "failed" || j.Steps[1].Status != "pending" || j.Error == "" {
		t.Fatalf("failed job %+v", j)
	}
	if n := len(e.events("proc-http")); n != 1 {
		t.Fatalf("%d events, want 1 (the failed job's event step never ran)", n)
	}

	// Submitting needs X-Process-ID and a known workflow.
	checkProblem(t, e.do(req{method: "POST", path: "/jobs", key: adminKey, body: map[string]any{"workflow_id": ok}}), 400)
	checkProblem(t, e.do(req{method: "POST", path: "/jobs", key: adminKey, header: map[string]string{"X-Process-ID": "p"},
		body: map[string]any{"workflow_id": "01890a5d-ac96-774b-bcce-b302099a8057"}}), 422)
	checkProblem(t, e.do(req{method: "POST", path: "/jobs", key: adminKey, header: map[string]string{"X-Process-ID": "p"},
		body: map[string]any{"workflow_id": "nope"}}), 400)
	checkProblem(t, e.do(req{method: "GET", path: "/jobs/not-a-uuid", key: adminKey}), 400)
	checkProblem(t, e.do(req{method: "GET", path: "/jobs/01890a5d-ac96-774b-bcce-b302099a8057", key: adminKey}), 404)
	var l struct{ Items []api.Job }
	must(t, e.do(req{method: "GET", path: "/jobs?status=failed", key: adminKey}), 200).json(t, &l)
	if len(l.Items) != 1 || l.Items[0].ID != j.ID {
		t.Fatalf("failed jobs: %+v", l.Items)
	}
}

// TestJobCancel: cancelling a queued job removes it from the queue,
// cancelling a running one stops it; the process then goes on with its
// next job; a finished job cannot be cancelled.
func TestJobCancel(t *testing.T) {
	e := newEnv(t)
	long := e.workflow(delay(600_000), event("never"))
	quick := e.workflow(event("quick"))
	const pid = "proc-cancel"
	running := e.submit(pid, long, nil)
	queued := e.submit(pid, long, nil)
	last := e.submit(pid, quick, nil)
	e.waitJob(running.ID, api.JobRunning)

	var j api.Job
	must(t, e.do(req{method: "POST", path: "/jobs/" + queued.ID + "/cancel", key: adminKey}), 200).json(t, &j)
	if j.Status != api.JobCancelled || j.Steps[0].Status != "pending" {
		t.Fatalf("cancelled queued job: %+v", j)
	}
	must(t, e.do(req{method: "POST", path: "/jobs/" + running.ID + "/cancel", key: adminKey}), 200).json(t, &j)
	if j.Status != api.JobCancelled || j.Steps[0].Status != "cancelled" || j.FinishedAt == nil {
		t.Fatalf("cancelled running job: %+v", j)
	}
	// Cancelling again answers the same.
	must(t, e.do(req{method: "POST", path: "/jobs/" + running.ID + "/cancel", key: adminKey}), 200)

	done := e.waitJob(last.ID, api.JobSucceeded)
	evs := e.events(pid)
	if len(evs) != 1 || evs[0].JobID != done.ID {
		t.Fatalf("events %+v", evs)
	}
	checkProblem(t, e.do(req{method: "POST", path: "/jobs/" + last.ID + "/cancel", key: adminKey}), 409)
}

// TestJobsResumeAfterRestart: a job interrupted mid-delay by a shutdown
// resumes after restart, waiting only what is left of its delay (here
// nothing: the downtime outlasted it), its event step runs once, and the
// job queued behind it runs after it.
func TestJobsResumeAfterRestart(t *testing.T) {
	e := newEnv(t)
	// Flake: a 400 ms delay could end before the restart on a loaded machine,
	// so the job was never interrupted; a 10 min delay cannot, and
	// outlastDelay makes the downtime longer than the delay instead.
	wf := e.workflow(event("before"), delay(600_000), event("after"))
	const pid = "proc-resume"
	first := e.submit(pid, wf, nil)
	second := e.submit(pid, e.workflow(event("before"), delay(0), event("after")), nil)
	waitFor(t, "first job in its delay", func() bool {
		j := e.job(first.ID)
		return j.Status == api.JobRunning && j.Steps[1].Status == "running"
	})
	if j := e.job(second.ID); j.Status != api.JobQueued {
		t.Fatalf("second job while the first one runs: %s", j.Status)
	}
	e.stop()
	e.outlastDelay(first.ID, 1)
	e.start()
	// Were the delay waited again from its start, the first job would not
	// end for 10 minutes.
	a := e.waitJob(first.ID, api.JobSucceeded)
	b := e.waitJob(second.ID, api.JobSucceeded)
	if a.Runs != 2 || b.Runs != 1 {
		t.Fatalf("runs: first %d (want 2), second %d (want 1)", a.Runs, b.Runs)
	}
	if !a.FinishedAt.Before(*b.StartedAt) {
		t.Fatalf("second started %v before first finished %v", b.StartedAt, a.FinishedAt)
	}
	var types []string
	for _, ev := range e.events(pid) {
		types = append(types, ev.Type)
	}
	if fmt.Sprint(types) != "[before after before after]" {
		t.Fatalf("events %v", types)
	}
}

// outlastDelay stands for a downtime longer than what is left of job id's
// delay step i: on the stopped server's store it moves the step's start
// back by the step's length, so nothing of the delay is left.
func (e *env) outlastDelay(id string, i int) {
	e.t.Helper()
	if !e.closed || e.open != nil {
		e.t.Fatal("outlastDelay needs a stopped server on Badger")
	}
	st, err := api.OpenBadger(e.dir, api.BadgerOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	err = st.Update(context.Background(), func(tx api.Tx) error {
		var j api.Job
		if err := store.GetJSON(tx, store.Key(store.PfxJob, id), &j); err != nil {
			return err
		}
		s := &j.Steps[i]
		if s.Type != api.StepDelay || s.Status != "running" || s.StartedAt == nil {
			return fmt.Errorf("step %d of job %s is not a delay under way: %+v", i, id, *s)
		}
		at := s.StartedAt.Add(-time.Duration(s.MS) * time.Millisecond)
		s.StartedAt = &at
		return store.PutJob(tx, &j)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// TestJobGivesUpAfterMaxRuns: a job interrupted more often than
// MaxJobRuns allows is marked failed instead of starting again.
func TestJobGivesUpAfterMaxRuns(t *testing.T) {
	e := newEnv(t, func(o *api.Options) { o.MaxJobRuns = 1 })
	wf := e.workflow(delay(600_000))
	j := e.submit("proc-crashy", wf, nil)
	e.waitJob(j.ID, api.JobRunning)
	e.restart()
	got := e.waitJob(j.ID, api.JobFailed)
	if got.Runs != 1 || got.Error == "" {
		t.Fatalf("%+v", got)
	}
}

// TestJobSubmitIdempotent: a repeated POST /jobs (same X-Request-ID, as
// the edge retries) creates one job and answers the first answer.
func TestJobSubmitIdempotent(t *testing.T) {
	e := newEnv(t)
	wf := e.workflow(event("once"))
	r := req{method: "POST", path: "/jobs", key: adminKey, body: map[string]any{"workflow_id": wf},
		header: map[string]string{"X-Process-ID": "proc-once", "X-Request-ID": "delivery-1", "Idempotency-Key": "delivery-1", "X-Edge-Attempt": "1"}}
	var a, b api.Job
	must(t, e.do(r), 201).json(t, &a)
	r.header["X-Edge-Attempt"] = "2"
	must(t, e.do(r), 201).json(t, &b)
	if a.ID != b.ID {
		t.Fatalf("two jobs: %s, %s", a.ID, b.ID)
	}
	e.waitJob(a.ID, api.JobSucceeded)
	var l struct{ Items []api.Job }
	must(t, e.do(req{method: "GET", path: "/jobs?process_id=proc-once", key: adminKey}), 200).json(t, &l)
	if len(l.Items) != 1 {
		t.Fatalf("%d jobs", len(l.Items))
	}
}
