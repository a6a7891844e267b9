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

// Store is the API's durable state, with serializable read-write
// transactions. It has two parts:
//   - process logs (processes and their events), the hot and concurrent
//     part, through the typed methods of Tx, which each engine implements
//     with its own means (Badger: keys; PostgreSQL: tables whose unique
//     constraints (process_id, seq) and (process_id, dedup) make appends
//     exactly-once and gap-free);
//   - every other collection (keys, apps, workflows, jobs, channels, …) as an
//     ordered key-value space whose prefixes are laid out in keys.go, so a
//     new collection needs no change here.
type Store interface {
	// View runs fn for reads only. Its reads see committed data; on
	// Badger they are one snapshot, on PostgreSQL each read sees what is
	// committed when it runs.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a read-write transaction and commits it durably: when
	// Update returns nil the writes are on disk. If fn returns an error nothing
	// it wrote is kept. fn sees one snapshot of committed, durable data, and
	// an Update that writes a row (key) another Update changed since that
	// snapshot fails and runs again (Badger's Updates are serialisable: one
	// writer). fn may be run more than once (e.g. on a write conflict),
	// so it must not have effects outside the transaction; it should be quick
	// (it may share a transaction with other calls).
	Update(ctx context.Context, fn func(Tx) error) error
	// Ping returns nil while the store can serve reads.
	Ping(ctx context.Context) error
	// Close flushes and closes the store. It is safe to call twice.
	Close() error
}

// Shared is implemented by a Store that several backends share (the
// PostgreSQL store). It keeps the partitioning they all obey.
type Shared interface {
	Store
	// InitPartitioning stores count (epoch 1) if no partitioning is stored
	// yet, and returns the one stored.
	InitPartitioning(ctx context.Context, count int) (Partitioning, error)
	// SetPartitioning stores count with the next epoch and returns it.
	SetPartitioning(ctx context.Context, count int) (Partitioning, error)
}

// Partitioning is how many partitions share the processes, and the epoch of
// that count: each change of the count gets the next epoch. The zero value
// means none is stored (an embedded store: the backend's own flags rule).
type Partitioning struct {
	Count int    `json:"count"`
	Epoch uint64 `json:"epoch"`
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

	// Process returns the process pid, or ErrNotFound.
	Process(pid string) (ProcessRecord, error)
	// Processes returns up to limit processes with ids after the id after
	// ("" from the first), in id (byte) order; owner "" means all, else
	// only that owner's.
	Processes(after, owner string, limit int) ([]ProcessRecord, error)
	// AppendEvent appends ev to the log of ev.ProcessID with the next
	// sequence number, which it sets in ev.Seq, creating the process
	// (owned by owner) if it has none. dedup names the append (a request
	// id, or a job step): a second append of the same dedup to the same
	// process is ErrDuplicate. It returns the process after the append.
	AppendEvent(ev *Event, owner, dedup string) (ProcessRecord, error)
	// Event returns event seq of pid, or ErrNotFound.
	Event(pid string, seq uint64) (Event, error)
	// Events returns up to limit events of pid with sequence numbers
	// after after, in sequence order.
	Events(pid string, after uint64, limit int) ([]Event, error)
	// NextJob counts one more job submitted to pid, creating the process
	// (owned by owner) if it has none, and returns the process after it:
	// its Jobs is the new job's sequence number.
	NextJob(pid, owner string, now time.Time) (ProcessRecord, error)
	// Partitioning returns the stored partitioning, read in this
	// transaction (a concurrent change of it makes one of the two fail and
	// retry), or the zero Partitioning if the store keeps none.
	Partitioning() (Partitioning, error)
}

// Store errors, tested with errors.Is.
var (
	ErrNotFound    = errors.New("store: not found")
	ErrStoreClosed = errors.New("store: closed")
	// ErrDuplicate: the process already has an event appended under this
	// dedup name.
	ErrDuplicate = errors.New("store: duplicate event")
)
