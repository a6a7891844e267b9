// Package webhook delivers Flow events to the HTTP receivers clients
// subscribe: signed (Sign, Verify), with retries and backoff, through the
// per-host circuit breakers and under the outbound URL rules. Deliveries
// wait for a worker in a bounded in-memory queue; with a Journal (the API
// always gives one: Redis when REDIS_URL is set, else its store) each is
// also durable from Emit to its final result, so one under way or waiting
// when the process dies is made after the next start (at least once, with
// the same X-Flow-Delivery id). An event raised just before a crash, after
// its change committed but before Emit wrote it, can still be lost.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Flow events: what webhooks subscribe to. Each is emitted once, after the
// change that raised it has committed; its data is the resource as the API
// shows it.
const (
	EventPostCreated  = "post.created"  // a post was created; data: the post
	EventJobSucceeded = "job.succeeded" // a job ran all its steps; data: the job
	EventJobFailed    = "job.failed"    // a job failed (a step failed, or too many restarts); data: the job
	EventJobCancelled = "job.cancelled" // a job was cancelled; data: the job
)

// Events are the events a webhook may name ("*" names them all).
var Events = []string{EventPostCreated, EventJobSucceeded, EventJobFailed, EventJobCancelled}

// Webhook headers.
const (
	HeaderEvent     = "X-Flow-Event"     // the event name
	HeaderDelivery  = "X-Flow-Delivery"  // a UUID per (event, webhook), the same on every attempt
	HeaderTimestamp = "X-Flow-Timestamp" // unix seconds of this attempt
	HeaderSignature = "X-Flow-Signature" // "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)
)

// Sign returns the X-Flow-Signature value of a delivery: "sha256="
// and the hex HMAC-SHA256, keyed with the webhook's secret (its bytes as
// shown at creation), of the decimal unix timestamp, ".", and the body.
func Sign(secret string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Errors of Verify, tested with errors.Is.
var (
	ErrSignature = errors.New("webhook: signature does not match")
	ErrTimestamp = errors.New("webhook: timestamp missing, malformed or outside the tolerance")
)

// Verify checks a delivery as a receiver should: timestamp and
// signature are the X-Flow-Timestamp and X-Flow-Signature headers, body the
// raw request body. The timestamp must be within tolerance of now (0 means
// 5 minutes), which bounds replays, and the signature must match
// (compared in constant time).
func Verify(secret, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = 5 * time.Minute
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrTimestamp, timestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s away from now", ErrTimestamp, d.Round(time.Second))
	}
	if !hmac.Equal([]byte(signature), []byte(Sign(secret, ts, body))) {
		return ErrSignature
	}
	return nil
}
