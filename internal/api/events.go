package api

// eventSink receives the Flow events that webhooks subscribe to
// ("post.created", "job.succeeded", "job.failed", …). Emit must not block
// the request or job that raised the event: delivery is asynchronous.
type eventSink interface {
	Emit(event string, data any)
}

// emit hands an event to the webhook dispatcher, if the server has one.
// Callers emit only after the change that raised the event has committed.
func (s *Server) emit(event string, data any) {
	if s.events != nil {
		s.events.Emit(event, data)
	}
}
