// Package jobs runs workflow executions (jobs) on a bounded pool of workers.
//
// Guarantees: jobs of one process run one at a time, in submission order;
// a job queued or running when the process died is queued again at start
// (Recover) and resumes at its first unfinished step; an event step's event
// and the step's success commit together, so it is never appended twice.
package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/api/webhook"
	"github.com/flowedge/flowedge/internal/outbound"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is what a Runner needs. Store, HTTPClient, Breakers and Metrics
// are required; the zero value of the others means the default named on
// them.
type Config struct {
	// Store holds the jobs and the process logs event steps append to.
	Store store.Store
	// Workers is how many jobs run at once (of different processes); 0 means 4.
	Workers int
	// MaxRuns is how many times a job may be started (the first run plus
	// resumes after restarts) before it is marked failed; 0 means 5.
	MaxRuns int
	// Production applies the production outbound URL rules to http steps.
	Production bool
	// Version goes into the User-Agent of http steps.
	Version string
	// HTTPClient makes the calls of http steps.
	HTTPClient *http.Client
	// Breakers are the per-host circuit breakers http steps go through.
	Breakers *outbound.Breakers
	// Owns reports whether this backend owns pid under the partitioning
	// read in tx; nil means it owns every process. Jobs are taken up, started
	// and append events only where it says so, in the same transaction.
	Owns func(tx store.Tx, pid string) (bool, error)
	// Lock serialises the writers of one process on this backend, which
	// spares conflicts (correctness does not depend on it); nil means no
	// lock.
	Lock func(pid string) (unlock func())
	// Emit receives job.succeeded, job.failed and job.cancelled after the
	// job's end has committed; nil drops them.
	Emit func(event, owner string, data any)
	// Log receives the runner's log lines; nil discards them.
	Log *slog.Logger
	// Metrics are updated as jobs end and event steps append.
	Metrics Metrics
}

// Metrics are the runner's counters.
type Metrics struct {
	Events   prometheus.Counter     // flow_events_appended_total
	Finished *prometheus.CounterVec // flow_jobs_finished_total{status}
	Duration prometheus.Observer    // flow_job_duration_seconds
}

// Causes of a job context's end.
var (
	errJobCancelled = errors.New("job cancelled")
	errShutdown     = errors.New("server shutting down")
	errMoved        = errors.New("the job's process moved to another partition")
)

// Runner runs jobs on a fixed pool of workers. Jobs of one process run one
// at a time in submission order; processes take turns (a process whose job
// finished goes to the back of the line), so one busy process cannot starve
// the others.
//
// The queue lives in memory (job ids only) and on disk (the jq/ index):
// recover rebuilds the memory queue from the index at start.
type Runner struct {
	cfg     Config
	log     *slog.Logger
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

// New builds a runner; Recover loads the queue, Start runs the workers.
func New(cfg Config) *Runner {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.MaxRuns <= 0 {
		cfg.MaxRuns = 5
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Owns == nil {
		cfg.Owns = func(store.Tx, string) (bool, error) { return true, nil }
	}
	if cfg.Lock == nil {
		cfg.Lock = func(string) func() { return func() {} }
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Runner{cfg: cfg, log: cfg.Log, workers: cfg.Workers, ctx: ctx, stopAll: cancel,
		pending: map[string][]string{}, busy: map[string]string{}, running: map[string]*run{},
		wake: make(chan struct{}, 1)}
}

// emit hands a job event to Config.Emit, if set.
func (r *Runner) emit(event, owner string, data any) {
	if r.cfg.Emit != nil {
		r.cfg.Emit(event, owner, data)
	}
}

// Recover queues, in their order, the unfinished jobs of the processes
// this backend owns: at start, the jobs that were queued or running when
// the store was last used; after a change of the partitioning, also those
// of the processes that moved here. Jobs it has queued already are not
// queued twice, and queued jobs of processes it no longer owns are dropped
// from memory (they stay queued in the store, for their new owner).
func (r *Runner) Recover(ctx context.Context) error {
	type entry struct{ pid, id string }
	var found []entry
	var stale []store.Job
	owned := map[string]bool{}
	err := r.cfg.Store.View(ctx, func(tx store.Tx) error {
		found, stale = found[:0], stale[:0]
		return tx.Scan([]byte(store.PfxJobQueue), nil, func(k, v []byte) (bool, error) {
			pid, _, err := store.SplitSeqKey(store.PfxJobQueue, k)
			if err != nil {
				return false, err
			}
			own, seen := owned[pid]
			if !seen {
				if own, err = r.cfg.Owns(tx, pid); err != nil {
					return false, err
				}
				owned[pid] = own
			}
			if !own {
				return true, nil
			}
			var j store.Job
			if err := store.GetJSON(tx, store.Key(store.PfxJob, string(v)), &j); err != nil {
				return false, fmt.Errorf("recover job %s: %w", v, err)
			}
			if store.FinalStatus(j.Status) {
				stale = append(stale, j)
				return true, nil
			}
			found = append(found, entry{pid, j.ID})
			return true, nil
		})
	})
	if err != nil {
		return err
	}
	for _, j := range stale { // index entries of finished jobs: tidy up
		if err := r.cfg.Store.Update(ctx, func(tx store.Tx) error { return store.PutJob(tx, &j) }); err != nil {
			return err
		}
	}
	added := 0
	r.mu.Lock()
	for pid, q := range r.pending {
		if !owned[pid] {
			delete(r.pending, pid)
			r.queued -= len(q)
		}
	}
	for pid, id := range r.busy {
		if own, seen := owned[pid]; seen && !own {
			r.running[id].cancel(errMoved) // stays "running" in the store: its new owner resumes it
		}
	}
	for _, e := range found {
		if _, running := r.running[e.id]; running || slices.Contains(r.pending[e.pid], e.id) {
			continue
		}
		r.pending[e.pid] = append(r.pending[e.pid], e.id)
		if _, busy := r.busy[e.pid]; !busy && len(r.pending[e.pid]) == 1 {
			r.ready = append(r.ready, e.pid)
		}
		r.queued++
		added++
	}
	r.mu.Unlock()
	if added > 0 {
		r.log.Info("jobs queued again after restart or partitioning change", "jobs", added)
		r.signal()
	}
	return nil
}

func (r *Runner) Start() {
	for range r.workers {
		r.wg.Add(1)
		r.alive.Add(1)
		go r.work()
	}
}

// Stop ends the workers: running jobs are interrupted and stay "running" in
// the store, to resume at the next start.
func (r *Runner) Stop(ctx context.Context) error {
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

// Check is the queue health check: the workers must be alive.
func (r *Runner) Check(ctx context.Context) error {
	if r.ctx.Err() != nil {
		return errors.New("job runner stopped")
	}
	if n := r.alive.Load(); int(n) != r.workers {
		return fmt.Errorf("%d of %d job workers alive", n, r.workers)
	}
	return nil
}

// signal wakes one idle worker.
func (r *Runner) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Enqueue adds a committed job to its process's queue.
func (r *Runner) Enqueue(pid, id string) {
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
func (r *Runner) take() *run {
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
func (r *Runner) release(rn *run) {
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

func (r *Runner) work() {
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

// ProcessState tells what runs and waits for pid now.
func (r *Runner) ProcessState(pid string) (running string, queued int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.busy[pid], len(r.pending[pid])
}

// Depth returns how many jobs are queued and running.
func (r *Runner) Depth() (queued, running int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queued, len(r.running)
}

// Cancel cancels job j (not finished when read) and returns it as it ends.
func (r *Runner) Cancel(ctx context.Context, j store.Job) (store.Job, error) {
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
			return store.Job{}, ctx.Err()
		}
		var out store.Job
		err := r.cfg.Store.View(ctx, func(tx store.Tx) error { return store.GetJSON(tx, store.Key(store.PfxJob, j.ID), &out) })
		return out, err
	}
	r.mu.Unlock()
	// Committed but not enqueued yet (or already finished): settle it in the
	// store; a worker that takes it later sees it is cancelled.
	return r.markCancelled(ctx, j.ID)
}

// markCancelled marks a job that is not running cancelled, unless it has
// already finished; it returns the job as stored.
func (r *Runner) markCancelled(ctx context.Context, id string) (store.Job, error) {
	var j store.Job
	changed := false
	err := r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		changed = false
		if err := store.GetJSON(tx, store.Key(store.PfxJob, id), &j); err != nil {
			return err
		}
		if store.FinalStatus(j.Status) {
			return nil
		}
		now := time.Now().UTC()
		j.Status, j.FinishedAt, j.Error = store.JobCancelled, &now, "cancelled"
		changed = true
		return store.PutJob(tx, &j)
	})
	if err == nil && changed {
		r.cfg.Metrics.Finished.WithLabelValues(store.JobCancelled).Inc()
		r.emit(jobEvent(store.JobCancelled), j.Owner, j)
	}
	return j, err
}

// bg is the context of the runner's own store writes: they must finish
// even when the job's context was cancelled.
func bg() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// save stores the job's progress.
func (r *Runner) save(j *store.Job) error {
	ctx, cancel := bg()
	defer cancel()
	return r.cfg.Store.Update(ctx, func(tx store.Tx) error { return store.PutJob(tx, j) })
}

// execute runs a taken job from its first unfinished step.
func (r *Runner) execute(rn *run) {
	j, ok := r.begin(rn)
	if !ok {
		return
	}
	for i := range j.Steps {
		if j.Steps[i].Status == store.StepSucceeded {
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
		case errors.Is(err, errMoved), errors.Is(cause, errMoved):
			r.log.Info("job interrupted: its process moved to another partition, where it resumes", "job_id", j.ID, "step", i)
		case errors.Is(cause, errShutdown), errors.Is(err, store.ErrStoreClosed):
			r.log.Info("job interrupted by shutdown; it resumes at the next start", "job_id", j.ID, "step", i)
		case errors.Is(cause, errJobCancelled):
			r.finish(&j, i, store.JobCancelled, "cancelled")
		default:
			r.finish(&j, i, store.JobFailed, fmt.Sprintf("step %d (%s): %v", i, j.Steps[i].Type, err))
		}
		return
	}
	r.finish(&j, -1, store.JobSucceeded, "")
}

// begin marks the job running (or settles it) and returns it; ok is false
// when there is nothing to run.
func (r *Runner) begin(rn *run) (j store.Job, ok bool) {
	if errors.Is(context.Cause(rn.ctx), errShutdown) {
		return j, false
	}
	ctx, cancel := bg()
	defer cancel()
	final := ""
	err := r.cfg.Store.Update(ctx, func(tx store.Tx) error {
		final = ""
		if err := store.GetJSON(tx, store.Key(store.PfxJob, rn.id), &j); err != nil {
			return err
		}
		if store.FinalStatus(j.Status) {
			return nil
		}
		if own, err := r.cfg.Owns(tx, j.ProcessID); err != nil || !own {
			if err == nil {
				err = errMoved
			}
			return err
		}
		now := time.Now().UTC()
		switch {
		case errors.Is(context.Cause(rn.ctx), errJobCancelled):
			j.Status, j.Error = store.JobCancelled, "cancelled"
		case j.Runs >= r.cfg.MaxRuns:
			j.Status, j.Error = store.JobFailed, fmt.Sprintf("interrupted %d times (restarts while running); not started again", j.Runs)
		default:
			j.Status = store.JobRunning
			j.Runs++
			if j.StartedAt == nil {
				j.StartedAt = &now
			}
			return store.PutJob(tx, &j)
		}
		final = j.Status
		j.FinishedAt = &now
		return store.PutJob(tx, &j)
	})
	if errors.Is(err, errMoved) {
		r.log.Info("job not started: its process moved to another partition, which runs it", "job_id", rn.id)
		return j, false
	}
	if err != nil {
		r.log.Error("cannot start job; it stays queued on disk until the next start", "job_id", rn.id, "err", err)
		return j, false
	}
	if final != "" {
		r.cfg.Metrics.Finished.WithLabelValues(final).Inc()
		r.emit(jobEvent(final), j.Owner, j)
	}
	return j, j.Status == store.JobRunning && final == ""
}

// jobEvent is the webhook event of a job's final status.
func jobEvent(status string) string {
	switch status {
	case store.JobSucceeded:
		return webhook.EventJobSucceeded
	case store.JobCancelled:
		return webhook.EventJobCancelled
	}
	return webhook.EventJobFailed
}

// finish records a job's end; failed is the index of the step that ended
// it (-1 if none).
func (r *Runner) finish(j *store.Job, failed int, status, msg string) {
	now := time.Now().UTC()
	j.Status, j.Error, j.FinishedAt = status, msg, &now
	if failed >= 0 {
		st := &j.Steps[failed]
		if st.Status == store.StepPending || st.Status == store.StepRunning {
			st.Status = store.StepFailed
			if status == store.JobCancelled {
				st.Status = store.StepCancelled
			}
			st.FinishedAt = &now
		}
	}
	if err := r.save(j); err != nil {
		r.log.Error("cannot record job end; it runs again at the next start", "job_id", j.ID, "status", status, "err", err)
		return
	}
	r.cfg.Metrics.Finished.WithLabelValues(status).Inc()
	r.emit(jobEvent(status), j.Owner, *j)
	if j.StartedAt != nil {
		r.cfg.Metrics.Duration.Observe(now.Sub(*j.StartedAt).Seconds())
	}
	r.log.Info("job finished", "job_id", j.ID, "process_id", j.ProcessID, "status", status, "error", msg)
}

// step runs step i of j and records its result.
func (r *Runner) step(rn *run, j *store.Job, i int) error {
	st := &j.Steps[i]
	now := time.Now().UTC()
	switch st.Type {
	case store.StepDelay:
		if st.StartedAt == nil || st.Status != store.StepRunning {
			st.Status, st.StartedAt = store.StepRunning, &now
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
		st.Status, st.FinishedAt = store.StepSucceeded, &end
		return r.save(j)

	case store.StepEvent:
		data := st.Data
		if data == nil {
			b, err := json.Marshal(map[string]any{"job_id": j.ID, "workflow_id": j.WorkflowID, "step": i, "input": j.Input})
			if err != nil {
				return err
			}
			data = b
		}
		unlock := r.cfg.Lock(j.ProcessID)
		defer unlock()
		ctx, cancel := bg()
		defer cancel()
		// The event and the step's success commit together: a crash can
		// never append it twice.
		var ev store.Event
		cp := *st
		err := r.cfg.Store.Update(ctx, func(tx store.Tx) error {
			if own, err := r.cfg.Owns(tx, j.ProcessID); err != nil || !own {
				if err == nil {
					err = errMoved
				}
				return err
			}
			ev = store.Event{ProcessID: j.ProcessID, ID: store.NewID(), Type: st.EventType, Data: data,
				RequestID: j.RequestID, JobID: j.ID, CreatedAt: now}
			var res json.RawMessage
			switch _, err := tx.AppendEvent(&ev, j.Owner, fmt.Sprintf("job:%s/%d", j.ID, i)); {
			case errors.Is(err, store.ErrDuplicate):
				// Appended by another run of this step (the process moved
				// while the job ran): the step's effect is there, once.
				res = json.RawMessage(`{"already_appended":true}`)
			case err != nil:
				return err
			default:
				res, _ = json.Marshal(map[string]any{"seq": ev.Seq, "event_id": ev.ID})
			}
			*st = cp
			st.Status, st.StartedAt, st.FinishedAt, st.Result = store.StepSucceeded, &now, &now, res
			return store.PutJob(tx, j)
		})
		if err != nil {
			*st = cp
			return err
		}
		r.cfg.Metrics.Events.Inc()
		return nil

	case store.StepHTTP:
		st.Status, st.StartedAt, st.Error, st.Result = store.StepRunning, &now, "", nil
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
			st.Status = store.StepFailed
			return err
		}
		st.Status = store.StepSucceeded
		return r.save(j)
	}
	return fmt.Errorf("unknown step type %q", st.Type)
}

// maxResultBody bounds how much of an http step's answer the job keeps.
const maxResultBody = 4 << 10

// call makes the request of http step i. It sends Idempotency-Key
// "<job id>/<step>", the same on every retry of the step after a restart.
func (r *Runner) call(ctx context.Context, j *store.Job, i int) (json.RawMessage, error) {
	st := j.Steps[i]
	if err := outbound.CheckURL(st.URL, r.cfg.Production); err != nil {
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
	req.Header.Set("User-Agent", "flowedge-api/"+r.cfg.Version)
	req.Header.Set("Idempotency-Key", fmt.Sprintf("%s/%d", j.ID, i))
	req.Header.Set("X-Flow-store.Job-ID", j.ID)
	req.Header.Set("X-Process-ID", j.ProcessID)
	// Through the host's circuit breaker: while it is open the step fails
	// at once without a request.
	resp, err := r.cfg.Breakers.Do(req.URL, func() (*http.Response, error) { return r.cfg.HTTPClient.Do(req) })
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
