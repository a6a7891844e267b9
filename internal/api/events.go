package api

import (
	"time"

	"github.com/flowedge/flowedge/internal/api/webhook"
)

// Flow events, webhook headers and signatures (see package webhook).
const (
	EventPostCreated  = webhook.EventPostCreated
	EventJobSucceeded = webhook.EventJobSucceeded
	EventJobFailed    = webhook.EventJobFailed
	EventJobCancelled = webhook.EventJobCancelled

	HeaderWebhookEvent     = webhook.HeaderEvent
	HeaderWebhookDelivery  = webhook.HeaderDelivery
	HeaderWebhookTimestamp = webhook.HeaderTimestamp
	HeaderWebhookSignature = webhook.HeaderSignature
)

// Errors of VerifyWebhook, tested with errors.Is.
var (
	ErrWebhookSignature = webhook.ErrSignature
	ErrWebhookTimestamp = webhook.ErrTimestamp
)

// WebhookOptions tunes webhook delivery (see webhook.Options).
type WebhookOptions = webhook.Options

// SignWebhook returns the X-Flow-Signature value of a delivery (see
// webhook.Sign).
func SignWebhook(secret string, timestamp int64, body []byte) string {
	return webhook.Sign(secret, timestamp, body)
}

// VerifyWebhook checks a delivery as a receiver should (see webhook.Verify).
func VerifyWebhook(secret, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	return webhook.Verify(secret, timestamp, signature, body, now, tolerance)
}

// emit hands an event about a resource of owner ("" for one every key may
// read) to the webhook dispatcher, if the server has one. Callers emit only
// after the change that raised the event has committed.
func (s *Server) emit(event, owner string, data any) {
	if s.hooks != nil {
		s.hooks.Emit(event, owner, data)
	}
}
