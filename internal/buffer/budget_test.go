package buffer

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func openTuneTest(t testing.TB, opts Options, mod func(*tuning)) Queue {
	t.Helper()
	tu := defaultTuning()
	if mod != nil {
		mod(&tu)
	}
	if opts.Logger == nil {
		opts.Logger = discardLogger()
	}
	q, err := openTuned(opts, tu)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

// TestOutcomeBudget: kept outcomes stay within OutcomeMaxBytes, the oldest
// dropped first; a dropped outcome is unknown (ErrNotFound) and its
// idempotency entry goes with it, while a kept one still answers a repeat.
// (The bug: outcomes and idempotency keys were kept 24 h whatever their
// number, ~280 bytes per delivered request, and filled the disk.)
// ackFull appends n idempotent records of key and acknowledges each with a
// full outcome (a 1000-byte body, counted against OutcomeMaxBytes) that
// finished at finished (zero: now).
func ackFull(t *testing.T, q Queue, key string, n int, finished time.Time) []*Record {
	t.Helper()
	recs := make([]*Record, n)
	for i := range recs {
		recs[i] = newRecord(0, key, 10)
		recs[i].IdempotencyScope = recs[i].ID
	}
	mustAppend(t, q, recs...)
	body := bytes.Repeat([]byte("b"), 1000)
	for _, r := range recs {
		out := Outcome{Status: StatusDelivered, ResponseStatus: 200, ResponseBody: body, FinishedAt: finished}
		if err := q.Ack(context.Background(), r, out); err != nil {
			t.Fatal(err)
		}
	}
	return recs
}

func TestOutcomeBudget(t *testing.T) {
	const budget = 64 << 10
	q := openTuneTest(t, Options{Path: t.TempDir(), Partitions: 1, OutcomeMaxBytes: budget},
		func(tu *tuning) { tu.budgetInterval = 50 * time.Millisecond })
	recs := ackFull(t, q, "k", 400, time.Time{})
	body := bytes.Repeat([]byte("b"), 1000)
	waitUntil(t, 10*time.Second, "outcomes within budget", func() bool { return q.Stats().OutcomeBytes <= budget })
	if ob := q.Stats().OutcomeBytes; ob < budget/2 {
		t.Fatalf("outcome bytes %d: more dropped than the budget needs", ob)
	}
	if _, err := q.Lookup(recs[0].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("oldest outcome: %v, want ErrNotFound", err)
	}
	last := recs[len(recs)-1]
	d, err := q.Lookup(last.ID)
	if err != nil || d.Status != StatusDelivered || !bytes.Equal(d.Outcome.ResponseBody, body) {
		t.Fatalf("newest outcome: %+v, %v", d, err)
	}
	// The newest is still an idempotent repeat; the oldest is a new request.
	again := newRecord(0, "k", 10)
	again.IdempotencyScope = last.IdempotencyScope
	if res := mustAppend(t, q, again); !res[0].Duplicate || res[0].ID != last.ID {
		t.Fatalf("repeat of a kept outcome: %+v", res)
	}
	old := newRecord(0, "k", 10)
	old.IdempotencyScope = recs[0].IdempotencyScope
	if res := mustAppend(t, q, old); res[0].Duplicate || res[0].Conflict {
		t.Fatalf("repeat of a dropped outcome: %+v", res)
	}
}

// TestOutcomeTrimHysteresis: a trim pass that starts over the budget goes
// on down to the low-water mark (7/8 of the budget), and none starts below
// the budget.
//
// Regression: trimmed just under the budget, a few outcomes went after
// nearly every commit once the budget filled; their deletions sort at the
// bottom of the outcome range, so nearly every memtable spanned all kept
// outcomes and every compaction rewrote them again.
func TestOutcomeTrimHysteresis(t *testing.T) {
	const budget = 64 << 10
	q := openTuneTest(t, Options{Path: t.TempDir(), Partitions: 1, OutcomeMaxBytes: budget}, nil)
	qq := q.(*queue)
	qq.gcCancel() // no trims in the background: the test runs each pass
	ctx := context.Background()
	ackFull(t, q, "k", 100, time.Time{})
	if ob := q.Stats().OutcomeBytes; ob <= budget {
		t.Fatalf("outcome bytes %d, want over the budget %d to start with", ob, budget)
	}
	if _, err := qq.trimOutcomes(ctx); err != nil {
		t.Fatal(err)
	}
	if ob, low := q.Stats().OutcomeBytes, int64(budget*7/8); ob > low || ob < low-2048 {
		t.Fatalf("outcome bytes %d after a trim pass, want just under the low-water mark %d", ob, low)
	}
	before := q.Stats().OutcomeBytes
	ackFull(t, q, "k", 2, time.Time{}) // still under the budget
	n, err := qq.trimOutcomes(ctx)
	if err != nil || n != 0 {
		t.Fatalf("a trim under the budget deleted %d (%v), want none", n, err)
	}
	if q.Stats().OutcomeBytes <= before {
		t.Fatal("the two new outcomes were not counted")
	}
}

// TestOutcomeAgeTrim: a pass for the age limit starts only once the oldest
// outcome is OutcomeTTL/16 past it, and then drops what is past the limit,
// not what the budget keeps.
//
// Regression: once a pass had started, the low-water mark of budget passes
// applied to age passes too, and an age pass over a count between 7/8 of
// the budget and the budget dropped unexpired outcomes (and with them the
// idempotency keys of requests still within their TTL).
func TestOutcomeAgeTrim(t *testing.T) {
	const (
		budget = 64 << 10
		ttl    = time.Hour
	)
	q := openTuneTest(t, Options{Path: t.TempDir(), Partitions: 1, OutcomeMaxBytes: budget, OutcomeTTL: ttl}, nil)
	qq := q.(*queue)
	qq.gcCancel() // no trims in the background: the test runs each pass
	ctx := context.Background()
	// Past the TTL, but not by TTL/16 yet: no pass starts.
	barely := ackFull(t, q, "k", 1, time.Now().Add(-ttl-ttl/32))[0]
	ackFull(t, q, "k", 58, time.Time{})
	if ob := q.Stats().OutcomeBytes; ob <= budget*7/8 || ob > budget {
		t.Fatalf("outcome bytes %d, want between 7/8 of the budget and the budget", ob)
	}
	if n, err := qq.trimOutcomes(ctx); err != nil || n != 0 {
		t.Fatalf("trim with the oldest outcome %v past the TTL deleted %d (%v), want none", ttl/32, n, err)
	}
	if _, err := q.Lookup(barely.ID); err != nil {
		t.Fatalf("outcome just past the TTL: %v", err)
	}
	// Rewrite the oldest as long past the TTL: the pass starts, drops the
	// outcomes past the TTL (both) and keeps the rest, although the count
	// is above the low-water mark.
	old := newRecord(0, "k", 10)
	old.ID = "rec-00000000" // sorts before every other record of the test binary
	mustAppend(t, q, old)
	if err := q.Ack(ctx, old, Outcome{Status: StatusDelivered, ResponseStatus: 200, FinishedAt: time.Now().Add(-2 * ttl)}); err != nil {
		t.Fatal(err)
	}
	n, err := qq.trimOutcomes(ctx)
	if err != nil || n != 2 {
		t.Fatalf("age trim deleted %d (%v), want the 2 outcomes past the TTL", n, err)
	}
	if _, err := q.Lookup(barely.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("outcome past the TTL after the age trim: %v, want ErrNotFound", err)
	}
}

// TestOutcomeWithoutFinishTimeAged: an outcome with no finish time is
// dropped by the age pass. Regression: it counted as never expiring, so an
// age pass stopped at it; every later outcome then outlived the TTL until
// the budget filled, and so did the idempotency keys with them.
func TestOutcomeWithoutFinishTimeAged(t *testing.T) {
	const ttl = time.Hour
	q := openTuneTest(t, Options{Path: t.TempDir(), Partitions: 1, OutcomeTTL: ttl}, nil)
	qq := q.(*queue)
	qq.gcCancel() // no trims in the background: the test runs the pass
	ctx := context.Background()
	// As an earlier version or damage could leave it: no finish time, and
	// the lowest id, where every pass starts.
	err := qq.db.Update(func(txn *badger.Txn) error {
		return txn.Set(stringKey(prefixOutcome, "rec-00000000"), encodeOutcome(&Outcome{Status: StatusDelivered, ResponseStatus: 200}, 0))
	})
	if err != nil {
		t.Fatal(err)
	}
	expired := ackFull(t, q, "k", 3, time.Now().Add(-2*ttl))
	kept := ackFull(t, q, "k", 1, time.Time{})[0]
	if n, err := qq.trimOutcomes(ctx); err != nil || n != 4 {
		t.Fatalf("age trim deleted %d (%v), want the outcome without a finish time and the 3 past the TTL", n, err)
	}
	for _, r := range expired {
		if _, err := q.Lookup(r.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("outcome past the TTL after the age trim: %v, want ErrNotFound", err)
		}
	}
	if _, err := q.Lookup(kept.ID); err != nil {
		t.Fatalf("outcome within the TTL: %v", err)
	}
}

// TestTrimKeepsNewerIdempotencyKey: dropping an outcome drops its
// idempotency entry only if the entry still names that outcome's record.
//
// Regression: the trim deleted K <scope> unconditionally. When the entry
// had expired first (IdempotencyTTL) and the client had used the key again,
// it named the newer record, and trimming the old outcome made a repeat of
// the newer request, within its TTL, a new request: a duplicate delivery.
func TestTrimKeepsNewerIdempotencyKey(t *testing.T) {
	const budget = 2048
	q := openTuneTest(t, Options{Path: t.TempDir(), Partitions: 1, OutcomeMaxBytes: budget, IdempotencyTTL: time.Second}, nil)
	qq := q.(*queue)
	qq.gcCancel() // no trims in the background: the test runs the pass
	ctx := context.Background()
	a := newRecord(0, "k", 10)
	a.IdempotencyScope = "scope-1"
	mustAppend(t, q, a)
	if err := q.Ack(ctx, a, Outcome{Status: StatusDelivered, ResponseStatus: 200, ResponseBody: bytes.Repeat([]byte("a"), 4000)}); err != nil {
		t.Fatal(err)
	}
	// Once A's idempotency entry has expired, the same key is a new request.
	var b *Record
	waitUntil(t, 10*time.Second, "the idempotency entry of the first request expired", func() bool {
		r := newRecord(0, "k", 10)
		r.IdempotencyScope = "scope-1"
		if res := mustAppend(t, q, r); !res[0].Duplicate {
			b = r
			return true
		}
		return false
	})
	if err := q.Ack(ctx, b, Outcome{Status: StatusDelivered, ResponseStatus: 200, ResponseBody: []byte("b")}); err != nil {
		t.Fatal(err)
	}
	if n, err := qq.trimOutcomes(ctx); err != nil || n != 1 {
		t.Fatalf("trim deleted %d (%v), want A's outcome only", n, err)
	}
	again := newRecord(0, "k", 10)
	again.IdempotencyScope = "scope-1"
	if res := mustAppend(t, q, again); !res[0].Duplicate || res[0].ID != b.ID {
		t.Fatalf("a repeat of B after A's outcome was trimmed: %+v, want B's answer", res[0])
	}
}

// TestOutcomeTTL: outcomes older than OutcomeTTL are dropped and their
// count returns to zero.
func TestOutcomeTTL(t *testing.T) {
	q := openTuneTest(t, Options{Path: t.TempDir(), Partitions: 1, OutcomeTTL: time.Millisecond},
		func(tu *tuning) { tu.budgetInterval = 50 * time.Millisecond })
	r := newRecord(0, "k", 10)
	mustAppend(t, q, r)
	if err := q.Ack(context.Background(), r, Outcome{Status: StatusRejected, ResponseStatus: 400}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "outcome expired", func() bool {
		_, err := q.Lookup(r.ID)
		return errors.Is(err, ErrNotFound) && q.Stats().OutcomeBytes == 0
	})
}

// syncBuffer is a concurrency-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDiskBudgetLog: crossing 80% and 100% of the disk budget logs one line
// each, not one per request; DiskBytes is the directory's real size.
func TestDiskBudgetLog(t *testing.T) {
	var logs syncBuffer
	dir := t.TempDir()
	q := openTuneTest(t, Options{Path: dir, Partitions: 1, MaxBytes: 1, OutcomeMaxBytes: 1,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))},
		func(tu *tuning) { tu.budgetInterval, tu.diskOverhead = 20*time.Millisecond, 0 })
	// Badger's empty store already passes a budget of 2 bytes.
	waitUntil(t, 10*time.Second, "budget line", func() bool {
		return strings.Contains(logs.String(), "disk use reached its budget")
	})
	time.Sleep(200 * time.Millisecond) // several more checks
	if n := strings.Count(logs.String(), "disk use reached its budget"); n != 1 {
		t.Fatalf("%d budget lines, want 1:\n%s", n, logs.String())
	}
	st := q.Stats()
	if want := dirSize(dir); st.DiskBytes <= 0 || st.DiskBytes < want/2 || st.DiskBytes > want*2 {
		t.Fatalf("DiskBytes %d, a walk says %d", st.DiskBytes, want)
	}
}
