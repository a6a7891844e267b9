package buffer

import (
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestFailedSyncStopsQueue: a record whose sync failed is never shown to a
// reader, and the queue takes nothing more until it is reopened.
//
// Regression (e2e TestPowerCut in CI, 4 requests stored twice over 5 cuts):
// the syncer advanced the durable marks of a flight whose sync had failed,
// so Read served its records from Badger's memory. The edge delivered a
// request whose client had been answered 503 at the cut; the client's retry
// reached the restarted edge, which had not kept the record, and was
// delivered again under a new id.
func TestFailedSyncStopsQueue(t *testing.T) {
	dir := t.TempDir()
	var failSync atomic.Bool
	injected := errors.New("injected EIO")
	q := openTuneTest(t, Options{Path: dir, Partitions: 1}, func(tu *tuning) {
		tu.beforeSync = func(*queue) error {
			if failSync.Load() {
				return injected
			}
			return nil
		}
	})
	a := newRecord(0, "k", 10)
	mustAppend(t, q, a)
	if got := mustRead(t, q, 0, 0, 10); len(got) != 1 || got[0].ID != a.ID {
		t.Fatalf("Read before the failure: %v, want [%s]", ids(got), a.ID)
	}

	failSync.Store(true)
	b := newRecord(0, "k", 10)
	b.IdempotencyKey, b.IdempotencyScope = "idem-b", "scope-b"
	if _, err := q.Append(context.Background(), []*Record{b}); !errors.Is(err, injected) || !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("Append with a failing sync: %v, want %v wrapping %v", err, ErrSyncFailed, injected)
	}
	failSync.Store(false)

	// The failed record is not shown, and no later write is taken: a later
	// sync cannot vouch for pages a failed one may have dropped.
	if got, err := q.Read(0, a.Seq, 10, 0); len(got) != 0 || !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("Read after the failed sync: %v %v, want nothing and %v", ids(got), err, ErrSyncFailed)
	}
	c := newRecord(0, "k", 10)
	if _, err := q.Append(context.Background(), []*Record{c}); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("Append after the failed sync: %v, want %v", err, ErrSyncFailed)
	}
	if err := q.Err(); !errors.Is(err, ErrSyncFailed) {
		t.Fatalf("Err after the failed sync: %v, want %v", err, ErrSyncFailed)
	}
	if d, err := q.Lookup(b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup of the record whose sync failed: %+v %v, want %v", d, err, ErrNotFound)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	// Reopened, the queue serves what the disk holds and takes writes again.
	q = openTest(t, dir, 1)
	got := mustRead(t, q, 0, 0, 10)
	if len(got) == 0 || got[0].ID != a.ID {
		t.Fatalf("Read after reopening: %v, want %s first", ids(got), a.ID)
	}
	for _, r := range got {
		if r.ID == c.ID {
			t.Fatalf("the record appended after the failed sync was stored: %v", ids(got))
		}
	}
	d := newRecord(0, "k", 10)
	mustAppend(t, q, d)
	if err := q.Err(); err != nil {
		t.Fatalf("Err after reopening: %v", err)
	}
}

// TestThrottledDropIsSynced: the ack that drops a record rejected with 429
// returns only after a sync.
//
// Regression: the drop was committed without a sync, while the client was
// told 429 (nothing applied); a power cut before some later write's sync
// brought the record back, and it was delivered.
func TestThrottledDropIsSynced(t *testing.T) {
	var syncs atomic.Int64
	q := openTuneTest(t, Options{Path: t.TempDir(), Partitions: 1}, func(tu *tuning) {
		tu.beforeSync = func(*queue) error {
			syncs.Add(1)
			return nil
		}
	})
	r := newRecord(0, "k", 10)
	mustAppend(t, q, r)
	before := syncs.Load()
	out := Outcome{Status: StatusRejected, ResponseStatus: http.StatusTooManyRequests}
	if err := q.Ack(context.Background(), r, out); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if syncs.Load() == before {
		t.Errorf("the ack dropping a 429 returned before any sync")
	}
}
