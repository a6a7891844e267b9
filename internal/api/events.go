package api

// Flow events: what webhooks subscribe to. Each is emitted once, after the
// change that raised it has committed; its data is the resource as the API
// shows it.
const (
	EventPostCreated  = "post.created"  // a post was created; data: the post
	EventJobSucceeded = "job.succeeded" // a job ran all its steps; data: the job
	EventJobFailed    = "job.failed"    // a job failed (a step failed, or too many restarts); data: the job
	EventJobCancelled = "job.cancelled" // a job was cancelled; data: the job
)

// webhookEvents are the events a webhook may name ("*" names them all).
var webhookEvents = []string{EventPostCreated, EventJobSucceeded, EventJobFailed, EventJobCancelled}

// eventSink receives the Flow events that webhooks subscribe to
// ("post.created", "job.succeeded", "job.failed", …). owner is the user
// whose resource the event is about, "" for a resource every key may read
// (jobs): only webhooks that may read it get the event. Emit must not
// block the request or job that raised the event: delivery is
// asynchronous.
type eventSink interface {
	Emit(event, owner string, data any)
}

// emit hands an event about a resource of owner ("" for one every key may
// read) to the webhook dispatcher, if the server has one. Callers emit only
// after the change that raised the event has committed.
func (s *Server) emit(event, owner string, data any) {
	if s.events != nil {
		s.events.Emit(event, owner, data)
	}
}
