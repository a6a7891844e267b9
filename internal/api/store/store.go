// Package store is the API's durable state: the Store interface its
// engines implement, the key layout of its collections and the records the
// HTTP layer, the job runner and the webhook dispatcher share.
//
// Guarantees (of every Store): an Update that returns nil is durable; its
// writes are all kept or none; Updates are serialisable.
package store

import (
	"context"
	"errors"
	"time"
)

// Store is the API's durable state: an ordered key-value store with
// serializable read-write transactions. Collections (processes, events, jobs,
// keys, …) are key prefixes laid out in keys.go, so a new collection needs
// no change here, and another engine can back the API by implementing these
// few methods.
type Store interface {
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a read-write transaction and commits it durably: when
	// Update returns nil the writes are on disk. If fn returns an error nothing
	// it wrote is kept. Updates are serialisable, and fn sees only committed,
	// durable data. fn may be run more than once (e.g. on a write conflict),
	// so it must not have effects outside the transaction; it should be quick
	// (it may share a transaction with other calls).
	Update(ctx context.Context, fn func(Tx) error) error
	// Ping returns nil while the store can serve reads.
	Ping(ctx context.Context) error
	// Close flushes and closes the store. It is safe to call twice.
	Close() error
}

// Tx is one transaction of a Store. Byte slices passed in or returned are
// owned by the caller.
type Tx interface {
	// Get returns the value of key, or ErrNotFound.
	Get(key []byte) ([]byte, error)
	// Set writes key = value. A ttl > 0 makes the key vanish after ttl.
	Set(key, value []byte, ttl time.Duration) error
	// Delete removes key; removing a missing key is not an error.
	Delete(key []byte) error
	// Scan calls fn for each key that has prefix and is >= from (nil: from
	// the start of prefix), in ascending key order, until fn returns false or
	// an error.
	Scan(prefix, from []byte, fn func(key, value []byte) (more bool, err error)) error
}

// Store errors, tested with errors.Is.
var (
	ErrNotFound    = errors.New("store: not found")
	ErrStoreClosed = errors.New("store: closed")
)
