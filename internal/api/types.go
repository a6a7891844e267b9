package api

import (
	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/api/store/badgerstore"
)

// The store and the records the API shares with its job runner and webhook
// dispatcher live in package store; these names keep the API's own.
type (
	Store         = store.Store
	Tx            = store.Tx
	BadgerOptions = badgerstore.Options
	Job           = store.Job
	StepRun       = store.StepRun
	Step          = store.Step
	Event         = store.Event
	Webhook       = store.Webhook
	Partitioning  = store.Partitioning
)

// Store errors, tested with errors.Is.
var (
	ErrNotFound    = store.ErrNotFound
	ErrStoreClosed = store.ErrStoreClosed
)

// Job statuses (see store.JobQueued).
const (
	JobQueued    = store.JobQueued
	JobRunning   = store.JobRunning
	JobSucceeded = store.JobSucceeded
	JobFailed    = store.JobFailed
	JobCancelled = store.JobCancelled
)

// Step kinds (see store.StepDelay).
const (
	StepDelay = store.StepDelay
	StepEvent = store.StepEvent
	StepHTTP  = store.StepHTTP
)

// OpenBadger opens the embedded store in dir (see badgerstore.Open).
func OpenBadger(dir string, o BadgerOptions) (Store, error) { return badgerstore.Open(dir, o) }
