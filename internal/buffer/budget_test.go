package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
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
func TestOutcomeBudget(t *testing.T) {
	const budget = 64 << 10
	q := openTuneTest(t, Options{Path: t.TempDir(), Partitions: 1, OutcomeMaxBytes: budget},
		func(tu *tuning) { tu.budgetInterval = 50 * time.Millisecond })
	ctx := context.Background()
	var recs []*Record
	for i := range 400 {
		r := newRecord(0, "k", 10)
		r.IdempotencyScope = fmt.Sprintf("scope-%d", i)
		recs = append(recs, r)
	}
	mustAppend(t, q, recs...)
	body := bytes.Repeat([]byte("b"), 1000)
	for _, r := range recs {
		if err := q.Ack(ctx, r, Outcome{Status: StatusDelivered, ResponseStatus: 200, ResponseBody: body}); err != nil {
			t.Fatal(err)
		}
	}
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
	body := bytes.Repeat([]byte("b"), 1000)
	ack := func(n int) {
		t.Helper()
		for range n {
			r := newRecord(0, "k", 10)
			r.IdempotencyScope = r.ID // a full outcome, counted
			mustAppend(t, q, r)
			if err := q.Ack(ctx, r, Outcome{Status: StatusDelivered, ResponseStatus: 200, ResponseBody: body}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ack(100)
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
	ack(2) // still under the budget
	n, err := qq.trimOutcomes(ctx)
	if err != nil || n != 0 {
		t.Fatalf("a trim under the budget deleted %d (%v), want none", n, err)
	}
	if q.Stats().OutcomeBytes <= before {
		t.Fatal("the two new outcomes were not counted")
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
