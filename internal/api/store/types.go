package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
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
	StepPending   = "pending"
	StepRunning   = "running"
	StepSucceeded = "succeeded"
	StepFailed    = "failed"
	StepCancelled = "cancelled"
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
	Owner      string          `json:"owner,omitempty"` // user id of the key that submitted it; "" (stored before owners) means admin keys only
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

// FinalStatus reports whether a job status is final.
func FinalStatus(s string) bool { return s == JobSucceeded || s == JobFailed || s == JobCancelled }

// PutJob stores j and keeps the queue index (jq/) in step with its status.
func PutJob(tx Tx, j *Job) error {
	if FinalStatus(j.Status) {
		if err := tx.Delete(SeqKey(PfxJobQueue, j.ProcessID, j.Seq)); err != nil {
			return err
		}
	}
	return PutJSON(tx, Key(PfxJob, j.ID), j)
}

// Step kinds.
const (
	StepDelay = "delay" // wait MS milliseconds
	StepEvent = "event" // append an event to the job's process
	StepHTTP  = "http"  // call URL (outbound URL rules, 30s timeout)
)

// Step is one step of a workflow. Which fields apply depends on Type.
type Step struct {
	Type string `json:"type"`
	// delay
	MS int64 `json:"ms,omitempty"`
	// event: EventType names the event (default "workflow.step"); Data is
	// its body (default: job id, workflow id, step index and job input).
	EventType string          `json:"event_type,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	// http: Method defaults to POST; Body defaults (for methods with a body)
	// to the job id, workflow id, process id, step index and job input.
	Method  string            `json:"method,omitempty"`
	URL     string            `json:"url,omitempty"`
	Body    json.RawMessage   `json:"body,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

// ProcessRecord is a process's summary as stored, with its counters
// (LastSeq for events, Jobs for job submissions).
type ProcessRecord struct {
	ID            string     `json:"id"`
	Owner         string     `json:"owner,omitempty"` // user id of the key that created it; "" (stored before owners) means admin keys only
	LastSeq       uint64     `json:"last_seq"`
	LastEventType string     `json:"last_event_type,omitempty"`
	LastEventAt   *time.Time `json:"last_event_at,omitempty"`
	Jobs          uint64     `json:"jobs"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

// Event is one entry of a process's log.
type Event struct {
	ProcessID string          `json:"process_id"`
	Seq       uint64          `json:"seq"` // 1, 2, 3… per process, in commit order
	ID        string          `json:"id"`
	Type      string          `json:"type,omitempty"` // the body's "type" member, if a string
	Data      json.RawMessage `json:"data"`           // the JSON body as sent (compacted)
	RequestID string          `json:"request_id,omitempty"`
	JobID     string          `json:"job_id,omitempty"` // set when a job's event step appended it
	CreatedAt time.Time       `json:"created_at"`
}

// Webhook is a subscription as the API shows it: never its secret.
type Webhook struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"` // event names, or ["*"] for all
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"` // id of the key that created it
}

// WebhookRecord is a Webhook as stored. A webhook belongs to the user of
// the key that created it, as a channel does: keys of that user and admin
// keys see and delete it; to others it does not exist (404). It gets the
// events of resources that user may read: post.created only for that
// user's channels, unless an admin key created it (every channel).
type WebhookRecord struct {
	Webhook
	Secret string `json:"secret"`
	Owner  string `json:"owner,omitempty"` // user id; "" (stored before owners) means admin keys only
	Admin  bool   `json:"admin,omitempty"` // created by an admin key
}

// Sees reports whether the webhook may get an event about a resource of
// user owner ("" for a resource every key may read).
func (w *WebhookRecord) Sees(owner string) bool {
	return owner == "" || w.Admin || (w.Owner != "" && w.Owner == owner)
}

// Wants reports whether the webhook subscribes to event.
func (w *Webhook) Wants(event string) bool {
	return slices.Contains(w.Events, "*") || slices.Contains(w.Events, event)
}

// LoadWebhooks reads every webhook.
func LoadWebhooks(ctx context.Context, st Store) ([]WebhookRecord, error) {
	var out []WebhookRecord
	err := st.View(ctx, func(tx Tx) error {
		out = out[:0]
		return tx.Scan([]byte(PfxWebhook), nil, func(k, v []byte) (bool, error) {
			var rec WebhookRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return false, fmt.Errorf("store: decode %q: %w", k, err)
			}
			out = append(out, rec)
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load webhooks: %w", err)
	}
	return out, nil
}

// NewID returns a fresh resource id: a UUIDv7, so ids sort by creation time.
func NewID() string { return uuid.Must(uuid.NewV7()).String() }
