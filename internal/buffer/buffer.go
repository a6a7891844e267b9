// Package buffer is the edge's durable queue on Badger.
//
// Guarantees:
//   - Append returns nil only once every record it was given is on disk
//     (fsynced when Options.Fsync is true). Concurrent Appends share one write
//     and one fsync (group commit), so many writers cost few fsyncs.
//   - Records of one partition are read back in Append order (by Seq). A record
//     stays in the queue until it is acknowledged (Ack) or dead-lettered:
//     reading never removes anything, so a crash at any point loses no record
//     that Append acknowledged; what was in flight is simply read again.
//   - Restart does not scan the queue: counters are persisted with every
//     write, and reading resumes by seeking to the head of each partition.
//   - A record that cannot be decoded is quarantined (kept aside, counted),
//     never a reason to stop.
//
// All writes go through one committer goroutine that owns the queue's state.
package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// Errors returned by Queue methods. Callers test them with errors.Is.
var (
	// ErrFull means the queue holds Options.MaxBytes already: nothing of the
	// call was stored.
	ErrFull = errors.New("buffer: full")
	// ErrDiskLow means the queue's filesystem has less free space than
	// DiskOverhead, which Badger may need for its memtables, flushes and
	// compactions (it writes through memory-mapped files, and a write that
	// finds the filesystem full kills the process with SIGBUS): nothing of
	// the call was stored. It wraps ErrFull, so it is answered as a full
	// queue, and it ends once space is free again.
	ErrDiskLow = fmt.Errorf("%w: its filesystem has less than %d MiB free", ErrFull, DiskOverhead>>20)
	// ErrClosed means the queue was closed.
	ErrClosed = errors.New("buffer: closed")
	// ErrNotFound means no record, outcome or dead letter has that id.
	ErrNotFound = errors.New("buffer: not found")
	// ErrSyncFailed means a sync of the queue's files failed. The queue can
	// no longer tell what is on disk (after a failed fsync the kernel may
	// have dropped the pages it could not write, and a later fsync would
	// succeed without them), so it stops: every later write and Read fails
	// with it, and only reopening the queue recovers. A write answered
	// with it may or may not have reached the disk.
	ErrSyncFailed = errors.New("buffer: a sync failed; the queue takes nothing more until it is reopened")
)

// Status is where a delivery stands.
type Status string

// Delivery statuses, as reported by /edge/v1/deliveries/{id}.
const (
	StatusQueued    Status = "queued"    // stored, waiting for (another) attempt
	StatusInFlight  Status = "in_flight" // an attempt is under way (known to the delivery engine only)
	StatusDelivered Status = "delivered" // the backend answered 2xx/3xx
	StatusRejected  Status = "rejected"  // the backend answered a final 4xx
	StatusDead      Status = "dead"      // in the dead letters
)

// Record is one buffered client request.
type Record struct {
	ID             string // delivery id (UUIDv7), unique
	Partition      int    // partition the Key maps to
	Seq            uint64 // position in the partition, assigned by Append (starts at 1)
	Key            string // partition key (X-Process-ID)
	IdempotencyKey string // client's Idempotency-Key as sent, "" if none (forwarded to the backend)
	// IdempotencyScope is what Append dedupes on: an opaque digest the
	// ingress computes from the credential hash, method, path, partition key
	// and the client's Idempotency-Key, so that the same key under another
	// scope is a different key. "" = no idempotency (never deduped). It is
	// stored with the record (Read returns it).
	IdempotencyScope string
	Method           string      // HTTP method
	Path             string      // URL path as received
	RawQuery         string      // URL query, without '?'
	Header           http.Header // filtered client headers to forward
	Body             []byte
	ReceivedAt       time.Time
	Attempts         int       // attempts made so far (persisted by Nack)
	NextAttemptAt    time.Time // zero: at once
	LastError        string    // error of the last attempt, "" if none

	loc recLoc // where the record is stored, set by Append and Read
}

// Outcome is the final result of a delivery, kept for Options.OutcomeTTL.
type Outcome struct {
	ID             string
	Partition      int
	Key            string
	Status         Status // delivered, rejected or dead
	Attempts       int
	ResponseStatus int         // backend's status code, 0 if none
	ResponseHeader http.Header // backend's headers (hop-by-hop removed)
	ResponseBody   []byte      // backend's body, at most Options.MaxOutcomeBody bytes kept
	LastError      string      // why it was dead-lettered or the last attempt failed
	ReceivedAt     time.Time
	FinishedAt     time.Time

	scope string // the record's IdempotencyScope: dropped with the outcome
}

// Delivery is what Lookup knows of an id: the record while it is queued or
// dead, the outcome once it is final.
type Delivery struct {
	Status  Status   // queued, delivered, rejected or dead
	Record  *Record  // set while queued or dead (Body may be omitted)
	Outcome *Outcome // set once final (delivered, rejected, dead)
}

// DeadLetter is a record that could not be delivered, with the reason.
type DeadLetter struct {
	Record  *Record
	Outcome Outcome // Status dead, LastError is the reason
	Parked  bool    // the record's key is parked behind it (on_dead = "park")
}

// AppendResult tells what Append did with one record.
type AppendResult struct {
	// Duplicate is true when the record's IdempotencyScope was appended
	// before (within Options.IdempotencyTTL) with the same body and query:
	// nothing was stored and ID is the delivery id of the first record.
	Duplicate bool
	// Conflict is true when the record's IdempotencyScope was appended
	// before with another body or query: nothing was stored and ID is the
	// delivery id of the first record (the ingress answers 422).
	Conflict bool
	ID       string
}

// PartitionStats are the gauges of one partition.
type PartitionStats struct {
	Records     int       // queued records (not dead letters)
	Bytes       int64     // encoded size of the queued records
	DeadLetters int       // records in the dead letters
	Oldest      time.Time // ReceivedAt of the oldest queued record, zero if empty
}

// Stats are the queue's gauges.
type Stats struct {
	Bytes       int64 // encoded size of all queued records (what MaxBytes bounds)
	Partitions  []PartitionStats
	Quarantined int // corrupt records set aside since the queue was created

	// DiskBytes is the real size of the queue's directory (allocated
	// blocks, as du counts them), measured at most once a second.
	DiskBytes int64
	// DiskBudget is what DiskBytes should stay under: MaxBytes +
	// OutcomeMaxBytes + DiskOverhead.
	DiskBudget int64
	// OutcomeBytes is the encoded size of the kept outcomes (what
	// OutcomeMaxBytes bounds).
	OutcomeBytes int64
}

// Queue is the durable queue. All methods are safe for concurrent use.
type Queue interface {
	// Append stores recs durably, assigning each its Seq, and returns when
	// they are on disk. Records whose IdempotencyScope was already appended
	// (or appears twice in one call) are not stored: their result says
	// Duplicate (same body and query) or Conflict (another body or query)
	// with the first record's id. ErrFull: nothing was stored.
	Append(ctx context.Context, recs []*Record) ([]AppendResult, error)

	// Read returns up to max queued records of partition p with Seq > after,
	// in Seq order, stopping early once their bodies pass maxBytes (at least
	// one record is returned when any is there). It seeks past `after`, so it
	// never re-walks acknowledged records. Reading does not remove anything.
	Read(p int, after uint64, max int, maxBytes int) ([]*Record, error)

	// Notify returns a channel that receives a value (coalesced, never
	// blocking the writer) after records were appended to partition p.
	Notify(p int) <-chan struct{}

	// Freed returns a channel that receives a value (coalesced) after records
	// left the queue, for writers waiting on ErrFull.
	Freed() <-chan struct{}

	// Nack records a failed attempt: it persists rec.Attempts,
	// rec.NextAttemptAt and rec.LastError (not fsynced: after a crash the
	// attempt count may be a little behind, never ahead).
	Nack(ctx context.Context, rec *Record) error

	// Ack removes rec from the queue and keeps out (Status delivered or
	// rejected) for Options.OutcomeTTL. Ack does not wait for a sync: after
	// a crash an acknowledged record may be delivered again (the backend
	// dedupes by X-Request-ID), never lost. Except a rejection for 429 (a
	// record dropped, its client told nothing was applied): with Fsync on,
	// that Ack returns once synced, as no redelivery may follow it.
	Ack(ctx context.Context, rec *Record, out Outcome) error

	// DeadLetter moves rec from the queue to the dead letters with out
	// (Status dead, LastError the reason). With park, rec.Key of that
	// partition is recorded as parked until the dead letter is replayed or
	// discarded.
	DeadLetter(ctx context.Context, rec *Record, out Outcome, park bool) error

	// Parked returns the parked keys of partition p and the id of the dead
	// letter that parks each.
	Parked(p int) (map[string]string, error)

	// DeadLetters lists dead letters, partition p only when p >= 0, oldest
	// first, at most limit, starting after cursor ("" = from the start). The
	// returned cursor is "" when there are no more.
	DeadLetters(p int, cursor string, limit int) ([]DeadLetter, string, error)

	// Replay moves dead letter id back into the queue at its original Seq
	// (so ordering rules still hold), with Attempts reset and its park
	// lifted, and returns the record. ErrNotFound if id is not dead.
	Replay(ctx context.Context, id string) (*Record, error)

	// Discard deletes dead letter id for good and lifts its park.
	Discard(ctx context.Context, id string) error

	// Lookup tells what is known of delivery id. ErrNotFound if nothing
	// (never seen, or its outcome expired).
	Lookup(id string) (Delivery, error)

	// Stats returns the gauges (cheap: no scan).
	Stats() Stats

	// Err returns the last write error (e.g. disk full), nil once a write
	// succeeded again; after a failed sync, the error wrapping ErrSyncFailed
	// for good. The health endpoints report it.
	Err() error

	// Close flushes and closes the store. Safe to call twice.
	Close() error
}

// Options configure a queue. The zero value of each field means the default
// named in its comment.
type Options struct {
	Path           string        // directory of the Badger store; required
	Partitions     int           // number of partitions; required, >= 1
	MaxBytes       int64         // bound of Stats.Bytes; 0 = 1 GiB
	Fsync          *bool         // fsync before Append returns; nil = true
	IdempotencyTTL time.Duration // how long Idempotency-Keys are remembered; 0 = 24h
	OutcomeTTL     time.Duration // how long outcomes are kept; 0 = 24h
	// OutcomeMaxBytes bounds the encoded size of kept outcomes: the oldest
	// are dropped first. 0 = 256 MiB.
	OutcomeMaxBytes int64
	MaxOutcomeBody  int          // response body bytes kept per outcome; 0 = 64 KiB
	Logger          *slog.Logger // quarantined records, GC runs, write errors; nil = discard

	// Route maps a record's key to its partition under a partition count
	// (the edge passes partition.OfString). When the count differs from the
	// one the queue was last opened with, Open moves every queued record,
	// dead letter and park to the partition that now owns its key, in order,
	// before serving. Nil leaves records where they are (logged).
	Route func(key string, partitions int) int
}
