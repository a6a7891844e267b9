package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
)

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
	if err := store.GetJSON(tx, store.Key(store.PfxWorkflow, in.WorkflowID), &w); errors.Is(err, ErrNotFound) || (err == nil && !ownedBy(w.Owner, c.key)) {
		return result{}, unprocessable("workflow_id: no workflow %s", in.WorkflowID)
	} else if err != nil {
		return result{}, err
	}
	if err := s.checkOwnerTx(tx, pid); err != nil {
		return result{}, err
	}
	if p, err := tx.Process(pid); err == nil && !processVisible(p, c.key) {
		return result{}, notFound("no process %q", pid)
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return result{}, err
	}
	now := time.Now().UTC()
	p, err := tx.NextJob(pid, c.key.user(), now)
	if err != nil {
		return result{}, err
	}
	if !processVisible(p, c.key) { // created concurrently by another user
		return result{}, notFound("no process %q", pid)
	}
	j := Job{ID: store.NewID(), Status: JobQueued, WorkflowID: w.ID, ProcessID: pid, Seq: p.Jobs, Input: in.Input,
		RequestID: c.info.id, Owner: c.key.user(), CreatedAt: now, Steps: make([]StepRun, len(w.Steps))}
	for i, st := range w.Steps {
		j.Steps[i] = StepRun{Step: st, Status: store.StepPending}
	}
	if err := store.PutJob(tx, &j); err != nil {
		return result{}, err
	}
	id := []byte(j.ID)
	if err := tx.Set(store.SeqKey(store.PfxProcessJob, pid, j.Seq), id, 0); err != nil {
		return result{}, err
	}
	if err := tx.Set(store.SeqKey(store.PfxJobQueue, pid, j.Seq), id, 0); err != nil {
		return result{}, err
	}
	res, _ := created(j, "/jobs/"+j.ID)
	res.after = func() { s.runner.Enqueue(pid, j.ID) }
	return res, nil
}

// getJob: GET /jobs/{id}.
func (s *Server) getJob(c *call) (result, error) {
	j, err := getByID(c, s.store, store.PfxJob, "job", func(j Job) bool { return ownedBy(j.Owner, c.key) })
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
		prefix = store.SeqPrefix(store.PfxProcessJob, pid)
		if cursor != "" {
			seq, err := strconv.ParseUint(cursor, 10, 64)
			if err != nil {
				return result{}, badRequest("cursor: want a job seq, got %q", cursor)
			}
			from = store.SeqKey(store.PfxProcessJob, pid, seq+1)
		}
	} else {
		prefix = []byte(store.PfxJob)
		if cursor != "" {
			if err := validUUID("cursor", cursor); err != nil {
				return result{}, err
			}
			from = append(store.Key(store.PfxJob, cursor), 0)
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
				if err := store.GetJSON(tx, store.Key(store.PfxJob, string(v)), &j); err != nil {
					return false, err
				}
				last = strconv.FormatUint(j.Seq, 10)
			} else {
				if err := json.Unmarshal(v, &j); err != nil {
					return false, fmt.Errorf("store: decode %q: %w", k, err)
				}
				last = j.ID
			}
			if (status == "" || j.Status == status) && ownedBy(j.Owner, c.key) {
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
	j, err := getByID(c, s.store, store.PfxJob, "job", func(j Job) bool { return ownedBy(j.Owner, c.key) })
	if err != nil {
		return result{}, err
	}
	if !store.FinalStatus(j.Status) {
		if j, err = s.runner.Cancel(c.r.Context(), j); err != nil {
			return result{}, err
		}
	}
	if j.Status != JobCancelled {
		return result{}, conflict("job %s already %s", j.ID, j.Status)
	}
	return ok(j)
}
