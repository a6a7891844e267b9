package api

import (
	"context"
	"time"
)

// Timeouts of the work a request or job waits on (docs/production.md, cross-cutting:
// database 5 s, storage 10 s, external calls 30 s, webhook delivery 10 s).
//
// Storage: the service keeps no files outside its store, so the only
// storage work outside DatabaseTimeout is the storage health check (statfs
// of the data directory), bounded far tighter by HealthOptions.StorageTimeout
// (DefaultCheckTimeout) so /health/health answers within 100 ms. Webhook
// deliveries have their own 10 s timeout (webhooks.go).
const (
	// DatabaseTimeout bounds every Store call the Server makes (View,
	// Update, Ping): the call gets a context that ends this long after it
	// starts, or earlier if the caller's does. An Update still queued for
	// the committer when it ends is dropped without running; a request
	// whose store call ran out of time is answered 503 with Retry-After.
	DatabaseTimeout = 5 * time.Second
	// ExternalTimeout bounds an outbound call of an http step, from dial to
	// the end of the response body (the default Options.HTTPClient).
	ExternalTimeout = 30 * time.Second
)

// deadlineStore gives every call of the Store it wraps a deadline of at
// most timeout.
type deadlineStore struct {
	Store
	timeout time.Duration
}

func (d deadlineStore) View(ctx context.Context, fn func(Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.Store.View(ctx, fn)
}

func (d deadlineStore) Update(ctx context.Context, fn func(Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.Store.Update(ctx, fn)
}

func (d deadlineStore) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	return d.Store.Ping(ctx)
}
