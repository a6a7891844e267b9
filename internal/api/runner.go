package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Causes of a job context's end.
var (
	errJobCancelled = errors.New("job cancelled")
	errShutdown     = errors.New("server shutting down")
)

// runner runs jobs on a fixed pool of workers. Jobs of one process run one
// at a time in submission order; processes take turns (a process whose job
// finished goes to the back of the line), so one busy process cannot starve
// the others.
//
// The queue lives in memory (job ids only) and on disk (the jq/ index):
// recover rebuilds the memory queue from the index at start.
type runner struct {
	s       *Server
	workers int
	ctx     context.Context
	stopAll context.CancelCauseFunc
	wg      sync.WaitGroup
	alive   atomic.Int32 // workers running

	mu      sync.Mutex
	pending map[string][]string // pid → ids of its queued jobs, in order
	ready   []string            // pids that may start a job (lazy: entries are re-checked)
	busy    map[string]string   // pid → id of its running job
	running map[string]*run     // job id → its run
	queued  int                 // jobs in pending
	wake    chan struct{}
}

// run is a job a worker has taken.
type run struct {
	id, pid string
	ctx     context.Context
	cancel  context.CancelCauseFunc
	done    chan struct{} // closed when the worker is done with the job
}

func newRunner(s *Server) *runner {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &runner{s: s, workers: s.opts.Workers, ctx: ctx, stopAll: cancel,
		pending: map[string][]string{}, busy: map[string]string{}, running: map[string]*run{},
		wake: make(chan struct{}, 1)}
}

// recover queues again, in their order, the jobs that were queued or
// running when the store was last used.
func (r *runner) recover(ctx context.Context) error {
	var stale []Job
	err := r.s.store.View(ctx, func(tx Tx) error {
		return tx.Scan([]byte(pfxJobQueue), nil, func(k, v []byte) (bool, error) {
			pid, _, err := splitSeqKey(pfxJobQueue, k)
			if err != nil {
				return false, err
			}
			var j Job
			if err := getJSON(tx, rkey(pfxJob, string(v)), &j); err != nil {
				return false, fmt.Errorf("recover job %s: %w", v, err)
			}
			if finalStatus(j.Status) {
				stale = append(stale, j)
				return true, nil
			}
			r.pending[pid] = append(r.pending[pid], j.ID)
			if len(r.pending[pid]) == 1 {
				r.ready = append(r.ready, pid)
			}
			r.queued++
			return true, nil
		})
	})
	if err != nil {
		return err
	}
	for _, j := range stale { // index entries of finished jobs: tidy up
		if err := r.s.store.Update(ctx, func(tx Tx) error { return putJob(tx, &j) }); err != nil {
			return err
		}
	}
	if r.queued > 0 {
		r.s.log.Info("jobs queued again after restart", "jobs", r.queued, "processes", len(r.pending))
	}
	return nil
}

func (r *runner) start() {
	for range r.workers {
		r.wg.Add(1)
		r.alive.Add(1)
		go r.work()
	}
}

// stop ends the workers: running jobs are interrupted and stay "running" in
// the store, to resume at the next start.
func (r *runner) stop(ctx context.Context) error {
	r.stopAll(errShutdown)
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("job workers did not stop: %w", ctx.Err())
	}
}

// check is the queue health check: the workers must be alive.
func (r *runner) check(ctx context.Context) error {
	if r.ctx.Err() != nil {
		return errors.New("job runner stopped")
	}
	if n := r.alive.Load(); int(n) != r.workers {
		return fmt.Errorf("%d of %d job workers alive", n, r.workers)
	}
	return nil
}

// signal wakes one idle worker.
func (r *runner) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// enqueue adds a committed job to its process's queue.
func (r *runner) enqueue(pid, id string) {
	r.mu.Lock()
	r.pending[pid] = append(r.pending[pid], id)
	r.queued++
	if _, busy := r.busy[pid]; !busy && len(r.pending[pid]) == 1 {
		r.ready = append(r.ready, pid)
	}
	r.mu.Unlock()
	r.signal()
}

// take waits for a job that may start and claims it.
func (r *runner) take() *run {
	for {
		if r.ctx.Err() != nil {
			return nil // shutting down: what is queued stays queued on disk
		}
		r.mu.Lock()
		for len(r.ready) > 0 {
			pid := r.ready[0]
			r.ready = r.ready[1:]
			q := r.pending[pid]
			if _, busy := r.busy[pid]; busy || len(q) == 0 {
				continue
			}
			id := q[0]
			if len(q) == 1 {
				delete(r.pending, pid)
			} else {
				r.pending[pid] = q[1:]
			}
			r.queued--
			ctx, cancel := context.WithCancelCause(r.ctx)
			rn := &run{id: id, pid: pid, ctx: ctx, cancel: cancel, done: make(chan struct{})}
			r.busy[pid] = id
			r.running[id] = rn
			more := len(r.ready) > 0
			r.mu.Unlock()
			if more {
				r.signal()
			}
			return rn
		}
		r.mu.Unlock()
		select {
		case <-r.ctx.Done():
			return nil
		case <-r.wake:
		}
	}
}

// release ends a run: the process may start its next job.
func (r *runner) release(rn *run) {
	r.mu.Lock()
	delete(r.running, rn.id)
	delete(r.busy, rn.pid)
	if len(r.pending[rn.pid]) > 0 {
		r.ready = append(r.ready, rn.pid)
	}
	r.mu.Unlock()
	rn.cancel(nil)
	close(rn.done)
	r.signal()
}

func (r *runner) work() {
	defer r.wg.Done()
	defer r.alive.Add(-1)
	for {
		rn := r.take()
		if rn == nil {
			return
		}
		r.execute(rn)
		r.release(rn)
	}
}

// processState tells what runs and waits for pid now.
func (r *runner) processState(pid string) (running string, queued int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.busy[pid], len(r.pending[pid])
}

// depth returns how many jobs are queued and running.
func (r *runner) depth() (queued, running int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queued, len(r.running)
}

// cancel cancels job j (not finished when read) and returns it as it ends.
func (r *runner) cancel(ctx context.Context, j Job) (Job, error) {
	r.mu.Lock()
	if q := r.pending[j.ProcessID]; slices.Contains(q, j.ID) {
		q = slices.DeleteFunc(slices.Clone(q), func(id string) bool { return id == j.ID })
		if len(q) == 0 {
			delete(r.pending, j.ProcessID)
		} else {
			r.pending[j.ProcessID] = q
		}
		r.queued--
		r.mu.Unlock()
		return r.markCancelled(ctx, j.ID)
	}
	if rn := r.running[j.ID]; rn != nil {
		rn.cancel(errJobCancelled)
		r.mu.Unlock()
		select {
		case <-rn.done:
		case <-ctx.Done():
			return Job{}, ctx.Err()
		}
		var out Job
		err := r.s.store.View(ctx, func(tx Tx) error { return getJSON(tx, rkey(pfxJob, j.ID), &out) })
		return out, err
	}
	r.mu.Unlock()
	// Committed but not enqueued yet (or already finished): settle it in the
	// store; a worker that takes it later sees it is cancelled.
	return r.markCancelled(ctx, j.ID)
}

// markCancelled marks a job that is not running cancelled, unless it has
// already finished; it returns the job as stored.
func (r *runner) markCancelled(ctx context.Context, id string) (Job, error) {
	var j Job
	changed := false
	err := r.s.store.Update(ctx, func(tx Tx) error {
		changed = false
		if err := getJSON(tx, rkey(pfxJob, id), &j); err != nil {
			return err
		}
		if finalStatus(j.Status) {
			return nil
		}
		now := time.Now().UTC()
		j.Status, j.FinishedAt, j.Error = JobCancelled, &now, "cancelled"
		changed = true
		return putJob(tx, &j)
	})
	if err == nil && changed {
		r.s.metrics.jobsFinished.WithLabelValues(JobCancelled).Inc()
		r.s.emit(jobEvent(JobCancelled), "", j)
	}
	return j, err
}

// bg is the context of the runner's own store writes: they must finish
// even when the job's context was cancelled.
func bg() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// save stores the job's progress.
func (r *runner) save(j *Job) error {
	ctx, cancel := bg()
	defer cancel()
	return r.s.store.Update(ctx, func(tx Tx) error { return putJob(tx, j) })
}

// execute runs a taken job from its first unfinished step.
func (r *runner) execute(rn *run) {
	j, ok := r.begin(rn)
	if !ok {
		return
	}
	for i := range j.Steps {
		if j.Steps[i].Status == stepSucceeded {
			continue
		}
		err := rn.ctx.Err()
		if err == nil {
			err = r.step(rn, &j, i)
		}
		if err == nil {
			continue
		}
		switch cause := context.Cause(rn.ctx); {
		case errors.Is(cause, errShutdown), errors.Is(err, ErrStoreClosed):
			r.s.log.Info("job interrupted by shutdown; it resumes at the next start", "job_id", j.ID, "step", i)
		case errors.Is(cause, errJobCancelled):
			r.finish(&j, i, JobCancelled, "cancelled")
		default:
			r.finish(&j, i, JobFailed, fmt.Sprintf("step %d (%s): %v", i, j.Steps[i].Type, err))
		}
		return
	}
	r.finish(&j, -1, JobSucceeded, "")
}

// begin marks the job running (or settles it) and returns it; ok is false
// when there is nothing to run.
func (r *runner) begin(rn *run) (j Job, ok bool) {
	if errors.Is(context.Cause(rn.ctx), errShutdown) {
		return j, false
	}
	ctx, cancel := bg()
	defer cancel()
	final := ""
	err := r.s.store.Update(ctx, func(tx Tx) error {
		final = ""
		if err := getJSON(tx, rkey(pfxJob, rn.id), &j); err != nil {
			return err
		}
		if finalStatus(j.Status) {
			return nil
		}
		now := time.Now().UTC()
		switch {
		case errors.Is(context.Cause(rn.ctx), errJobCancelled):
			j.Status, j.Error = JobCancelled, "cancelled"
		case j.Runs >= r.s.opts.MaxJobRuns:
			j.Status, j.Error = JobFailed, fmt.Sprintf("interrupted %d times (restarts while running); not started again", j.Runs)
		default:
			j.Status = JobRunning
			j.Runs++
			if j.StartedAt == nil {
				j.StartedAt = &now
			}
			return putJob(tx, &j)
		}
		final = j.Status
		j.FinishedAt = &now
		return putJob(tx, &j)
	})
	if err != nil {
		r.s.log.Error("cannot start job; it stays queued on disk until the next start", "job_id", rn.id, "err", err)
		return j, false
	}
	if final != "" {
		r.s.metrics.jobsFinished.WithLabelValues(final).Inc()
		r.s.emit(jobEvent(final), "", j)
	}
	return j, j.Status == JobRunning && final == ""
}

// jobEvent is the webhook event of a job's final status.
func jobEvent(status string) string {
	switch status {
	case JobSucceeded:
		return EventJobSucceeded
	case JobCancelled:
		return EventJobCancelled
	}
	return EventJobFailed
}

// finish records a job's end; failed is the index of the step that ended
// it (-1 if none).
func (r *runner) finish(j *Job, failed int, status, msg string) {
	now := time.Now().UTC()
	j.Status, j.Error, j.FinishedAt = status, msg, &now
	if failed >= 0 {
		st := &j.Steps[failed]
		if st.Status == stepPending || st.Status == stepRunning {
			st.Status = stepFailed
			if status == JobCancelled {
				st.Status = stepCancelled
			}
			st.FinishedAt = &now
		}
	}
	if err := r.save(j); err != nil {
		r.s.log.Error("cannot record job end; it runs again at the next start", "job_id", j.ID, "status", status, "err", err)
		return
	}
	r.s.metrics.jobsFinished.WithLabelValues(status).Inc()
	r.s.emit(jobEvent(status), "", *j)
	if j.StartedAt != nil {
		r.s.metrics.jobDuration.Observe(now.Sub(*j.StartedAt).Seconds())
	}
	r.s.log.Info("job finished", "job_id", j.ID, "process_id", j.ProcessID, "status", status, "error", msg)
}

// step runs step i of j and records its result.
func (r *runner) step(rn *run, j *Job, i int) error {
	st := &j.Steps[i]
	now := time.Now().UTC()
	switch st.Type {
	case StepDelay:
		if st.StartedAt == nil || st.Status != stepRunning {
			st.Status, st.StartedAt = stepRunning, &now
			if err := r.save(j); err != nil {
				return err
			}
		}
		// After a restart only what is left of the delay is waited.
		if wait := time.Until(st.StartedAt.Add(time.Duration(st.MS) * time.Millisecond)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-rn.ctx.Done():
				t.Stop()
				return rn.ctx.Err()
			case <-t.C:
			}
		}
		end := time.Now().UTC()
		st.Status, st.FinishedAt = stepSucceeded, &end
		return r.save(j)

	case StepEvent:
		data := st.Data
		if data == nil {
			b, err := json.Marshal(map[string]any{"job_id": j.ID, "workflow_id": j.WorkflowID, "step": i, "input": j.Input})
			if err != nil {
				return err
			}
			data = b
		}
		unlock := r.s.locks.lock(j.ProcessID)
		defer unlock()
		ctx, cancel := bg()
		defer cancel()
		// The event and the step's success commit together: a crash can
		// never append it twice.
		var ev Event
		cp := *st
		err := r.s.store.Update(ctx, func(tx Tx) error {
			var err error
			if ev, err = appendEventTx(tx, j.ProcessID, st.EventType, data, j.RequestID, j.ID, now); err != nil {
				return err
			}
			res, _ := json.Marshal(map[string]any{"seq": ev.Seq, "event_id": ev.ID})
			*st = cp
			st.Status, st.StartedAt, st.FinishedAt, st.Result = stepSucceeded, &now, &now, res
			return putJob(tx, j)
		})
		if err != nil {
			*st = cp
			return err
		}
		r.s.metrics.events.Inc()
		return nil

	case StepHTTP:
		st.Status, st.StartedAt, st.Error, st.Result = stepRunning, &now, "", nil
		if err := r.save(j); err != nil {
			return err
		}
		res, err := r.call(rn.ctx, j, i)
		end := time.Now().UTC()
		st.Result, st.FinishedAt = res, &end
		if err != nil {
			st.Error = err.Error()
			if rn.ctx.Err() != nil {
				return rn.ctx.Err() // interrupted, not failed: execute decides
			}
			st.Status = stepFailed
			return err
		}
		st.Status = stepSucceeded
		return r.save(j)
	}
	return fmt.Errorf("unknown step type %q", st.Type)
}

// maxResultBody bounds how much of an http step's answer the job keeps.
const maxResultBody = 4 << 10

// call makes the request of http step i. It sends Idempotency-Key
// "<job id>/<step>", the same on every retry of the step after a restart.
func (r *runner) call(ctx context.Context, j *Job, i int) (json.RawMessage, error) {
	st := j.Steps[i]
	if err := checkOutboundURL(st.URL, r.s.opts.Production); err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	body := []byte(st.Body)
	if body == nil && st.Method != http.MethodGet && st.Method != http.MethodDelete {
		b, err := json.Marshal(map[string]any{"job_id": j.ID, "workflow_id": j.WorkflowID, "process_id": j.ProcessID, "step": i, "input": j.Input})
		if err != nil {
			return nil, err
		}
		body = b
	}
	req, err := http.NewRequestWithContext(ctx, st.Method, st.URL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range st.Headers {
		req.Header.Set(k, v)
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "flowedge-api/"+r.s.opts.Version)
	req.Header.Set("Idempotency-Key", fmt.Sprintf("%s/%d", j.ID, i))
	req.Header.Set("X-Flow-Job-ID", j.ID)
	req.Header.Set("X-Process-ID", j.ProcessID)
	// Through the host's circuit breaker: while it is open the step fails
	// at once without a request.
	resp, err := r.s.breakers.do(req.URL, func() (*http.Response, error) { return r.s.opts.HTTPClient.Do(req) })
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(io.LimitReader(resp.Body, maxResultBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // let the connection be reused
	res, _ := json.Marshal(map[string]any{"status": resp.StatusCode, "body": string(got)})
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return res, fmt.Errorf("%s %s answered %d", st.Method, st.URL, resp.StatusCode)
	}
	return res, nil
}
