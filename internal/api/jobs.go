package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Job statuses: queued → running → succeeded | failed | cancelled.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// Step run statuses: pending → running → succeeded | failed | cancelled.
const (
	stepPending   = "pending"
	stepRunning   = "running"
	stepSucceeded = "succeeded"
	stepFailed    = "failed"
	stepCancelled = "cancelled"
)

// Job is one execution of a workflow for a process. It keeps a copy of the
// workflow's steps, so deleting the workflow does not break it, and records
// each step's result.
type Job struct {
	ID         string          `json:"id"`
	Status     string          `json:"status"`
	WorkflowID string          `json:"workflow_id"`
	ProcessID  string          `json:"process_id"`
	Seq        uint64          `json:"seq"` // submission order within the process, from 1
	Input      json.RawMessage `json:"input,omitempty"`
	Steps      []StepRun       `json:"steps"`
	Error      string          `json:"error,omitempty"`
	Runs       int             `json:"runs"` // times started: 1, or more after restarts
	RequestID  string          `json:"request_id,omitempty"`
	CreatedAt  time.Time       `json:"created_at"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
}

// StepRun is a step of a job: its definition and how it went.
type StepRun struct {
	Step
	Status     string          `json:"status"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
	Result     json.RawMessage `json:"result,omitempty"`
	Error      string          `json:"error,omitempty"`
}

func finalStatus(s string) bool { return s == JobSucceeded || s == JobFailed || s == JobCancelled }

// putJob stores j and keeps the queue index (jq/) in step with its status.
func putJob(tx Tx, j *Job) error {
	if finalStatus(j.Status) {
		if err := tx.Delete(seqKey(pfxJobQueue, j.ProcessID, j.Seq)); err != nil {
			return err
		}
	}
	return putJSON(tx, rkey(pfxJob, j.ID), j)
}

type jobInput struct {
	WorkflowID string          `json:"workflow_id"`
	Input      json.RawMessage `json:"input"`
}

// createJob: POST /jobs {workflow_id, input} with X-Process-ID → 201 Job
// (status queued). It runs under the process's lock, so submission order
// is the order of the process's job sequence numbers and of the queue.
func (s *Server) createJob(c *call, tx Tx) (result, error) {
	pid := c.r.Header.Get("X-Process-ID")
	if pid == "" {
		return result{}, badRequest("X-Process-ID is required: it names the process the job runs for")
	}
	var in jobInput
	if err := decodeJSON(c.body, &in); err != nil {
		return result{}, err
	}
	if err := validUUID("workflow_id", in.WorkflowID); err != nil {
		return result{}, err
	}
	var w Workflow
	if err := getJSON(tx, rkey(pfxWorkflow, in.WorkflowID), &w); errors.Is(err, ErrNotFound) {
		return result{}, unprocessable("workflow_id: no workflow %s", in.WorkflowID)
	} else if err != nil {
		return result{}, err
	}
	now := time.Now().UTC()
	p, err := loadProcess(tx, pid, now)
	if err != nil {
		return result{}, err
	}
	p.Jobs++
	p.UpdatedAt = now
	j := Job{ID: newID(), Status: JobQueued, WorkflowID: w.ID, ProcessID: pid, Seq: p.Jobs, Input: in.Input,
		RequestID: c.info.id, CreatedAt: now, Steps: make([]StepRun, len(w.Steps))}
	for i, st := range w.Steps {
		j.Steps[i] = StepRun{Step: st, Status: stepPending}
	}
	if err := putJob(tx, &j); err != nil {
		return result{}, err
	}
	id := []byte(j.ID)
	if err := tx.Set(seqKey(pfxProcessJob, pid, j.Seq), id, 0); err != nil {
		return result{}, err
	}
	if err := tx.Set(seqKey(pfxJobQueue, pid, j.Seq), id, 0); err != nil {
		return result{}, err
	}
	if err := putJSON(tx, rkey(pfxProcess, pid), p); err != nil {
		return result{}, err
	}
	res, _ := created(j, "/jobs/"+j.ID)
	res.after = func() { s.runner.enqueue(pid, j.ID) }
	return res, nil
}

// getJob: GET /jobs/{id}.
func (s *Server) getJob(c *call) (result, error) {
	j, err := getByID[Job](c, s.store, pfxJob, "job", nil)
	if err != nil {
		return result{}, err
	}
	return ok(j)
}

// listJobs: GET /jobs?process_id=&status=&cursor=&limit=. With process_id:
// that process's jobs in submission order (cursor: a job seq); without: all
// jobs in creation order (cursor: a job id).
func (s *Server) listJobs(c *call) (result, error) {
	q := c.r.URL.Query()
	pid, status := q.Get("process_id"), q.Get("status")
	switch status {
	case "", JobQueued, JobRunning, JobSucceeded, JobFailed, JobCancelled:
	default:
		return result{}, badRequest("status: want queued, running, succeeded, failed or cancelled, got %q", status)
	}
	cursor, limit, err := page(c.r)
	if err != nil {
		return result{}, err
	}
	out := list[Job]{Items: []Job{}}
	var prefix, from []byte
	if pid != "" {
		prefix = seqPrefix(pfxProcessJob, pid)
		if cursor != "" {
			seq, err := strconv.ParseUint(cursor, 10, 64)
			if err != nil {
				return result{}, badRequest("cursor: want a job seq, got %q", cursor)
			}
			from = seqKey(pfxProcessJob, pid, seq+1)
		}
	} else {
		prefix = []byte(pfxJob)
		if cursor != "" {
			if err := validUUID("cursor", cursor); err != nil {
				return result{}, err
			}
			from = append(rkey(pfxJob, cursor), 0)
		}
	}
	err = s.store.View(c.r.Context(), func(tx Tx) error {
		last := ""
		return tx.Scan(prefix, from, func(k, v []byte) (bool, error) {
			if len(out.Items) == limit {
				out.NextCursor = last
				return false, nil
			}
			var j Job
			if pid != "" { // the index holds the id
				if err := getJSON(tx, rkey(pfxJob, string(v)), &j); err != nil {
					return false, err
				}
				last = strconv.FormatUint(j.Seq, 10)
			} else {
				if err := json.Unmarshal(v, &j); err != nil {
					return false, fmt.Errorf("store: decode %q: %w", k, err)
				}
				last = j.ID
			}
			if status == "" || j.Status == status {
				out.Items = append(out.Items, j)
			}
			return true, nil
		})
	})
	if err != nil {
		return result{}, err
	}
	return ok(out)
}

// cancelJob: POST /jobs/{id}/cancel → 200 with the job, cancelled. A queued
// job leaves the queue; a running one is stopped (its current step is
// interrupted) and the answer waits for that. Cancelling a cancelled job
// answers the same again; a job that already succeeded or failed is a 409.
func (s *Server) cancelJob(c *call) (result, error) {
	j, err := getByID[Job](c, s.store, pfxJob, "job", nil)
	if err != nil {
		return result{}, err
	}
	if !finalStatus(j.Status) {
		if j, err = s.runner.cancel(c.r.Context(), j); err != nil {
			return result{}, err
		}
	}
	if j.Status != JobCancelled {
		return result{}, conflict("job %s already %s", j.ID, j.Status)
	}
	return ok(j)
}
