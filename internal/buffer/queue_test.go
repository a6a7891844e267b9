package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var idCounter atomic.Uint64

// newRecord returns a record of partition p with a unique id and a body of
// n bytes.
func newRecord(p int, key string, n int) *Record {
	id := fmt.Sprintf("rec-%08d", idCounter.Add(1))
	return &Record{
		ID:         id,
		Partition:  p,
		Key:        key,
		Method:     http.MethodPost,
		Path:       "/api/v1/processes/" + key + "/events",
		RawQuery:   "a=1",
		Header:     http.Header{"Content-Type": {"application/json"}, "X-Process-Id": {key}},
		Body:       bytes.Repeat([]byte{'x'}, n),
		ReceivedAt: time.Now(),
	}
}

func openTest(t testing.TB, dir string, partitions int, mod ...func(*Options)) Queue {
	t.Helper()
	opts := Options{Path: dir, Partitions: partitions}
	for _, m := range mod {
		m(&opts)
	}
	q, err := Open(opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = q.Close() })
	return q
}

func mustAppend(t testing.TB, q Queue, recs ...*Record) []AppendResult {
	t.Helper()
	res, err := q.Append(context.Background(), recs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return res
}

func mustRead(t testing.TB, q Queue, p int, after uint64, max int) []*Record {
	t.Helper()
	recs, err := q.Read(p, after, max, 0)
	if err != nil {
		t.Fatalf("Read(%d, %d): %v", p, after, err)
	}
	return recs
}

func ids(recs []*Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func TestAppendReadOrder(t *testing.T) {
	q := openTest(t, t.TempDir(), 3)
	var want [3][]string
	for i := range 30 {
		p := i % 3
		r := newRecord(p, fmt.Sprintf("k%d", i%7), 10+i)
		mustAppend(t, q, r)
		if r.Seq != uint64(i/3+1) {
			t.Fatalf("record %d: Seq = %d, want %d", i, r.Seq, i/3+1)
		}
		want[p] = append(want[p], r.ID)
	}
	for p := range 3 {
		got := mustRead(t, q, p, 0, 100)
		if fmt.Sprint(ids(got)) != fmt.Sprint(want[p]) {
			t.Fatalf("partition %d: got %v, want %v", p, ids(got), want[p])
		}
		for i, r := range got {
			if r.Seq != uint64(i+1) || r.Partition != p {
				t.Fatalf("partition %d record %d: Seq %d Partition %d", p, i, r.Seq, r.Partition)
			}
		}
		// Seek past a cursor, and max.
		got = mustRead(t, q, p, 4, 3)
		if fmt.Sprint(ids(got)) != fmt.Sprint(want[p][4:7]) {
			t.Fatalf("partition %d after 4: got %v, want %v", p, ids(got), want[p][4:7])
		}
	}
	// The record comes back whole.
	r := newRecord(1, "whole", 300)
	r.IdempotencyKey = "idem-whole"
	r.Header.Add("X-Multi", "a")
	r.Header.Add("X-Multi", "b")
	mustAppend(t, q, r)
	got := mustRead(t, q, 1, r.Seq-1, 1)
	if len(got) != 1 {
		t.Fatalf("read %d records", len(got))
	}
	g := got[0]
	if g.ID != r.ID || g.Key != r.Key || g.IdempotencyKey != r.IdempotencyKey || g.Method != r.Method ||
		g.Path != r.Path || g.RawQuery != r.RawQuery || !bytes.Equal(g.Body, r.Body) ||
		!g.ReceivedAt.Equal(r.ReceivedAt) || fmt.Sprint(g.Header) != fmt.Sprint(r.Header) {
		t.Fatalf("record changed:\n got %+v\nwant %+v", g, r)
	}
	// Reading removes nothing.
	if n := len(mustRead(t, q, 0, 0, 100)); n != 10 {
		t.Fatalf("second read: %d records", n)
	}
	st := q.Stats()
	if st.Partitions[0].Records != 10 || st.Partitions[1].Records != 11 || st.Partitions[2].Records != 10 {
		t.Fatalf("stats: %+v", st.Partitions)
	}
}

func TestReadMaxBytes(t *testing.T) {
	q := openTest(t, t.TempDir(), 1)
	for range 5 {
		mustAppend(t, q, newRecord(0, "k", 100))
	}
	got, err := q.Read(0, 0, 100, 250)
	if err != nil || len(got) != 2 {
		t.Fatalf("Read maxBytes 250: %d records, %v", len(got), err)
	}
	got, err = q.Read(0, 0, 100, 10)
	if err != nil || len(got) != 1 {
		t.Fatalf("Read maxBytes 10: %d records, %v (want at least one)", len(got), err)
	}
}

func TestNotify(t *testing.T) {
	q := openTest(t, t.TempDir(), 2)
	if q.Notify(5) != nil {
		t.Fatal("Notify out of range is not nil")
	}
	mustAppend(t, q, newRecord(1, "k", 1))
	select {
	case <-q.Notify(1):
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
	select {
	case <-q.Notify(0):
		t.Fatal("partition 0 notified")
	default:
	}
}

func TestAckNackLookup(t *testing.T) {
	ctx := context.Background()
	q := openTest(t, t.TempDir(), 2)
	a, b, c := newRecord(0, "k1", 50), newRecord(0, "k2", 60), newRecord(0, "k1", 70)
	mustAppend(t, q, a, b, c)

	d, err := q.Lookup(a.ID)
	if err != nil || d.Status != StatusQueued || d.Record == nil || d.Record.Seq != a.Seq || d.Record.Body != nil {
		t.Fatalf("Lookup queued: %+v, %v", d, err)
	}
	if _, err := q.Lookup("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup unknown: %v", err)
	}

	// Nack persists the attempt fields.
	b.Attempts, b.NextAttemptAt, b.LastError = 3, time.Now().Add(time.Minute), "503 from backend"
	if err := q.Nack(ctx, b); err != nil {
		t.Fatalf("Nack: %v", err)
	}
	got := mustRead(t, q, 0, 0, 10)
	if len(got) != 3 || got[1].Attempts != 3 || got[1].LastError != "503 from backend" ||
		!got[1].NextAttemptAt.Equal(b.NextAttemptAt) || !bytes.Equal(got[1].Body, b.Body) {
		t.Fatalf("after Nack: %+v", got[1])
	}
	before := q.Stats().Bytes

	// Ack removes and keeps the outcome.
	out := Outcome{Status: StatusDelivered, ResponseStatus: 201, ResponseHeader: http.Header{"X-A": {"1"}}, ResponseBody: []byte(`{"ok":true}`)}
	if err := q.Ack(ctx, a, out); err != nil {
		t.Fatalf("Ack: %v", err)
	}
	if err := q.Ack(ctx, a, out); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Ack: %v, want ErrNotFound", err)
	}
	if err := q.Nack(ctx, a); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Nack after Ack: %v, want ErrNotFound", err)
	}
	got = mustRead(t, q, 0, 0, 10)
	if fmt.Sprint(ids(got)) != fmt.Sprint([]string{b.ID, c.ID}) {
		t.Fatalf("after Ack: %v", ids(got))
	}
	// A delivered record without an idempotency scope keeps its status
	// line only: nobody can be answered from its headers and body.
	d, err = q.Lookup(a.ID)
	if err != nil || d.Status != StatusDelivered || d.Outcome == nil || d.Outcome.ResponseStatus != 201 ||
		d.Outcome.ResponseBody != nil || d.Outcome.ID != a.ID || d.Outcome.Key != "k1" ||
		d.Outcome.ResponseHeader != nil {
		t.Fatalf("Lookup delivered: %+v %+v, %v", d, d.Outcome, err)
	}
	st := q.Stats()
	if st.Partitions[0].Records != 2 || st.Bytes >= before {
		t.Fatalf("stats after Ack: %+v (bytes before %d)", st, before)
	}
	select {
	case <-q.Freed():
	default:
		t.Fatal("Freed not signalled after Ack")
	}
	// Acking a record with a wrong id is refused. (A record handed out by
	// Read or Append carries its location, and an ack through it is not
	// checked against the stored id once its segment has a finished set: a
	// made-up record has none.)
	fake := *b
	fake.ID, fake.loc = "other", recLoc{}
	if err := q.Ack(ctx, &fake, out); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Ack with wrong id: %v", err)
	}
}

func TestMaxOutcomeBody(t *testing.T) {
	q := openTest(t, t.TempDir(), 1, func(o *Options) { o.MaxOutcomeBody = 4 })
	r := newRecord(0, "k", 1)
	mustAppend(t, q, r)
	if err := q.Ack(context.Background(), r, Outcome{Status: StatusRejected, ResponseStatus: 400, ResponseBody: []byte("0123456789")}); err != nil {
		t.Fatal(err)
	}
	d, err := q.Lookup(r.ID)
	if err != nil || string(d.Outcome.ResponseBody) != "0123" || d.Status != StatusRejected {
		t.Fatalf("Lookup: %+v, %v", d.Outcome, err)
	}
}

func TestDeadLetterReplayDiscard(t *testing.T) {
	ctx := context.Background()
	q := openTest(t, t.TempDir(), 2)
	var recs []*Record
	for i := range 6 {
		recs = append(recs, newRecord(i%2, fmt.Sprintf("key%d", i%3), 20))
	}
	mustAppend(t, q, recs...)
	// Partition 0 holds recs 0, 2, 4 (keys key0, key2, key1); partition 1
	// holds 1, 3, 5 (key1, key0, key2).
	recs[0].Attempts = 4
	if err := q.DeadLetter(ctx, recs[0], Outcome{LastError: "421 misdirected", ResponseStatus: 421}, true); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	if err := q.DeadLetter(ctx, recs[2], Outcome{LastError: "gave up"}, false); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	if err := q.DeadLetter(ctx, recs[3], Outcome{LastError: "gave up too"}, true); err != nil {
		t.Fatalf("DeadLetter: %v", err)
	}
	if err := q.DeadLetter(ctx, recs[3], Outcome{}, true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("DeadLetter twice: %v", err)
	}
	if got := ids(mustRead(t, q, 0, 0, 10)); fmt.Sprint(got) != fmt.Sprint([]string{recs[4].ID}) {
		t.Fatalf("partition 0 queue: %v", got)
	}
	st := q.Stats()
	if st.Partitions[0].DeadLetters != 2 || st.Partitions[1].DeadLetters != 1 || st.Partitions[0].Records != 1 {
		t.Fatalf("stats: %+v", st.Partitions)
	}
	d, err := q.Lookup(recs[0].ID)
	if err != nil || d.Status != StatusDead || d.Record == nil || d.Outcome == nil ||
		d.Outcome.LastError != "421 misdirected" || d.Outcome.Status != StatusDead || d.Outcome.Attempts != 4 {
		t.Fatalf("Lookup dead: %+v, %v", d, err)
	}
	parked, err := q.Parked(0)
	if err != nil || len(parked) != 1 || parked["key0"] != recs[0].ID {
		t.Fatalf("Parked(0) = %v, %v", parked, err)
	}
	if parked, _ := q.Parked(1); len(parked) != 1 || parked["key0"] != recs[3].ID {
		t.Fatalf("Parked(1) = %v", parked)
	}

	// Pagination over all partitions, one at a time.
	var all []DeadLetter
	cursor := ""
	for {
		page, next, err := q.DeadLetters(-1, cursor, 1)
		if err != nil {
			t.Fatalf("DeadLetters: %v", err)
		}
		all = append(all, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	if len(all) != 3 || all[0].Record.ID != recs[0].ID || all[1].Record.ID != recs[2].ID || all[2].Record.ID != recs[3].ID {
		t.Fatalf("DeadLetters: %+v", all)
	}
	if !all[0].Parked || all[1].Parked || !all[2].Parked || all[0].Outcome.LastError != "421 misdirected" {
		t.Fatalf("DeadLetters parked flags/outcome: %+v", all)
	}
	page, next, err := q.DeadLetters(1, "", 10)
	if err != nil || len(page) != 1 || next != "" || page[0].Record.ID != recs[3].ID {
		t.Fatalf("DeadLetters(1): %+v %q %v", page, next, err)
	}
	if _, _, err := q.DeadLetters(-1, "garbage", 10); err == nil {
		t.Fatal("bad cursor accepted")
	}

	// Replay: back at the original Seq, attempts reset, park lifted.
	rep, err := q.Replay(ctx, recs[0].ID)
	if err != nil {
		t.Fatalf("Replay: %v", err)
	}
	if rep.Seq != recs[0].Seq || rep.Attempts != 0 || !rep.NextAttemptAt.IsZero() || !bytes.Equal(rep.Body, recs[0].Body) {
		t.Fatalf("replayed: %+v", rep)
	}
	select {
	case <-q.Notify(0):
	default:
		t.Fatal("no Notify after Replay")
	}
	if got := ids(mustRead(t, q, 0, 0, 10)); fmt.Sprint(got) != fmt.Sprint([]string{recs[0].ID, recs[4].ID}) {
		t.Fatalf("after replay: %v", got)
	}
	if parked, _ := q.Parked(0); len(parked) != 0 {
		t.Fatalf("park not lifted: %v", parked)
	}
	if _, err := q.Replay(ctx, recs[0].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Replay of a queued record: %v", err)
	}
	if d, _ := q.Lookup(recs[0].ID); d.Status != StatusQueued {
		t.Fatalf("Lookup after replay: %v", d.Status)
	}
	if st := q.Stats(); st.Partitions[0].Oldest.IsZero() || !st.Partitions[0].Oldest.Equal(recs[0].ReceivedAt) {
		t.Fatalf("Oldest after replay: %v, want %v", st.Partitions[0].Oldest, recs[0].ReceivedAt)
	}

	// Discard: gone for good, park lifted, Lookup still says dead.
	if err := q.Discard(ctx, recs[3].ID); err != nil {
		t.Fatalf("Discard: %v", err)
	}
	if err := q.Discard(ctx, recs[3].ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Discard twice: %v", err)
	}
	if parked, _ := q.Parked(1); len(parked) != 0 {
		t.Fatalf("park not lifted by Discard: %v", parked)
	}
	if d, err := q.Lookup(recs[3].ID); err != nil || d.Status != StatusDead || d.Record != nil {
		t.Fatalf("Lookup after Discard: %+v, %v", d, err)
	}
	st = q.Stats()
	if st.Partitions[0].DeadLetters != 1 || st.Partitions[1].DeadLetters != 0 || st.Partitions[0].Records != 2 {
		t.Fatalf("stats: %+v", st.Partitions)
	}
}

func TestOldest(t *testing.T) {
	ctx := context.Background()
	q := openTest(t, t.TempDir(), 1)
	var recs []*Record
	for i := range 4 {
		r := newRecord(0, "k", 1)
		r.ReceivedAt = time.Unix(1700000000+int64(i), 0)
		recs = append(recs, r)
	}
	mustAppend(t, q, recs...)
	if o := q.Stats().Partitions[0].Oldest; !o.Equal(recs[0].ReceivedAt) {
		t.Fatalf("Oldest = %v", o)
	}
	// Out of order: ack the second, then the first.
	for _, i := range []int{1, 0} {
		if err := q.Ack(ctx, recs[i], Outcome{Status: StatusDelivered}); err != nil {
			t.Fatal(err)
		}
	}
	if o := q.Stats().Partitions[0].Oldest; !o.Equal(recs[2].ReceivedAt) {
		t.Fatalf("Oldest = %v, want %v", o, recs[2].ReceivedAt)
	}
	for _, r := range recs[2:] {
		if err := q.Ack(ctx, r, Outcome{Status: StatusDelivered}); err != nil {
			t.Fatal(err)
		}
	}
	if st := q.Stats(); !st.Partitions[0].Oldest.IsZero() || st.Bytes != 0 || st.Partitions[0].Records != 0 {
		t.Fatalf("empty stats: %+v", st)
	}
}

func TestIdempotency(t *testing.T) {
	q := openTest(t, t.TempDir(), 2)
	a := newRecord(0, "k", 10)
	a.IdempotencyScope = "idem-1"
	res := mustAppend(t, q, a)
	if res[0].Duplicate || res[0].ID != a.ID {
		t.Fatalf("first: %+v", res)
	}
	b := newRecord(1, "k2", 10)
	b.IdempotencyScope = "idem-1"
	res = mustAppend(t, q, b)
	if !res[0].Duplicate || res[0].ID != a.ID || b.Seq != 0 {
		t.Fatalf("second: %+v (seq %d)", res, b.Seq)
	}
	// Twice in one call.
	c, d := newRecord(0, "k", 1), newRecord(0, "k", 1)
	c.IdempotencyScope, d.IdempotencyScope = "idem-2", "idem-2"
	res = mustAppend(t, q, c, d)
	if res[0].Duplicate || !res[1].Duplicate || res[1].ID != c.ID {
		t.Fatalf("same call: %+v", res)
	}
	if n := len(mustRead(t, q, 1, 0, 10)); n != 0 {
		t.Fatalf("duplicate stored: %d records in partition 1", n)
	}
	// Still a duplicate once the first is delivered.
	if err := q.Ack(context.Background(), a, Outcome{Status: StatusDelivered, ResponseStatus: 200}); err != nil {
		t.Fatal(err)
	}
	e := newRecord(0, "k", 10)
	e.IdempotencyScope = "idem-1"
	if res := mustAppend(t, q, e); !res[0].Duplicate || res[0].ID != a.ID {
		t.Fatalf("after ack: %+v", res)
	}
}

// TestIdempotencyScoped: the queue dedupes on IdempotencyScope alone: the
// same client key under another scope is a new record (the bug: keys were
// global, so another client's request with the same Idempotency-Key got the
// first client's answer), the same scope with another body or query is a
// Conflict naming the first id, and a record without a scope is never
// deduped, whatever its IdempotencyKey.
func TestIdempotencyScoped(t *testing.T) {
	q := openTest(t, t.TempDir(), 1)
	a := newRecord(0, "k", 10)
	a.IdempotencyKey, a.IdempotencyScope = "key-1", "scope-A"
	mustAppend(t, q, a)

	b := newRecord(0, "k", 10)
	b.IdempotencyKey, b.IdempotencyScope = "key-1", "scope-B"
	if res := mustAppend(t, q, b); res[0].Duplicate || res[0].Conflict || res[0].ID != b.ID || b.Seq == 0 {
		t.Fatalf("same key, other scope: %+v", res)
	}
	c := newRecord(0, "k", 10)
	c.IdempotencyKey = "key-1" // no scope: no idempotency
	if res := mustAppend(t, q, c); res[0].Duplicate || res[0].Conflict || c.Seq == 0 {
		t.Fatalf("no scope: %+v", res)
	}
	d := newRecord(0, "k", 11)
	d.IdempotencyKey, d.IdempotencyScope = "key-1", "scope-A"
	if res := mustAppend(t, q, d); res[0].Duplicate || !res[0].Conflict || res[0].ID != a.ID || d.Seq != 0 {
		t.Fatalf("other body: %+v", res)
	}
	e := newRecord(0, "k", 10)
	e.RawQuery = "a=2"
	e.IdempotencyKey, e.IdempotencyScope = "key-1", "scope-A"
	if res := mustAppend(t, q, e); !res[0].Conflict || res[0].ID != a.ID {
		t.Fatalf("other query: %+v", res)
	}
	// Within one call: the second with another body conflicts.
	f, g := newRecord(0, "k", 3), newRecord(0, "k", 4)
	f.IdempotencyScope, g.IdempotencyScope = "scope-C", "scope-C"
	if res := mustAppend(t, q, f, g); res[0].Conflict || !res[1].Conflict || res[1].ID != f.ID {
		t.Fatalf("same call: %+v", res)
	}
	if n := len(mustRead(t, q, 0, 0, 100)); n != 4 {
		t.Fatalf("%d records stored, want 4 (a, b, c, f)", n)
	}
}

// TestThrottledRetryIsNew pins a bug: a record dropped because the backend
// answered 429 (relayed to its client, nothing applied) kept its idempotency
// entry, so the client's retry with the same Idempotency-Key got the stored
// 429 back (Idempotent-Replayed) for the key's whole TTL and was never
// applied.
func TestThrottledRetryIsNew(t *testing.T) {
	q := openTest(t, t.TempDir(), 1)
	a := newRecord(0, "k", 10)
	a.IdempotencyKey, a.IdempotencyScope = "key-1", "scope-A"
	mustAppend(t, q, a)
	if err := q.Ack(context.Background(), a, Outcome{Status: StatusRejected, ResponseStatus: http.StatusTooManyRequests}); err != nil {
		t.Fatal(err)
	}
	b := newRecord(0, "k", 10)
	b.IdempotencyKey, b.IdempotencyScope = "key-1", "scope-A"
	if res := mustAppend(t, q, b); res[0].Duplicate || res[0].Conflict || res[0].ID != b.ID || b.Seq == 0 {
		t.Fatalf("retry after a relayed 429: %+v, want a new record", res)
	}
	// Any other final answer is still replayed.
	if err := q.Ack(context.Background(), b, Outcome{Status: StatusRejected, ResponseStatus: http.StatusConflict}); err != nil {
		t.Fatal(err)
	}
	c := newRecord(0, "k", 10)
	c.IdempotencyKey, c.IdempotencyScope = "key-1", "scope-A"
	if res := mustAppend(t, q, c); !res[0].Duplicate || res[0].ID != b.ID {
		t.Fatalf("repeat after a 409: %+v, want the first's answer", res)
	}
}

func TestIdempotencyConcurrent(t *testing.T) {
	q := openTest(t, t.TempDir(), 1)
	const n = 64
	var (
		wg      sync.WaitGroup
		stored  atomic.Int32
		firstID sync.Map
		start   = make(chan struct{})
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := newRecord(0, "k", 30)
			r.IdempotencyScope = "same-key"
			<-start
			res, err := q.Append(context.Background(), []*Record{r})
			if err != nil {
				t.Errorf("Append: %v", err)
				return
			}
			if !res[0].Duplicate {
				stored.Add(1)
			}
			firstID.Store(res[0].ID, true)
		}()
	}
	close(start)
	wg.Wait()
	if stored.Load() != 1 {
		t.Fatalf("%d records stored, want 1", stored.Load())
	}
	distinct := 0
	firstID.Range(func(any, any) bool { distinct++; return true })
	if distinct != 1 {
		t.Fatalf("%d distinct ids answered, want 1", distinct)
	}
	if got := len(mustRead(t, q, 0, 0, 100)); got != 1 {
		t.Fatalf("%d records in the queue, want 1", got)
	}
}

func TestFull(t *testing.T) {
	ctx := context.Background()
	q := openTest(t, t.TempDir(), 1, func(o *Options) { o.MaxBytes = 4000 })
	var recs []*Record
	for {
		r := newRecord(0, "k", 500)
		_, err := q.Append(ctx, []*Record{r})
		if errors.Is(err, ErrFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
		if len(recs) > 10 {
			t.Fatal("never full")
		}
	}
	st := q.Stats()
	if st.Bytes > 4000 || len(recs) == 0 {
		t.Fatalf("bytes %d with %d records", st.Bytes, len(recs))
	}
	// A call that does not fit stores none of its records.
	small, big := newRecord(0, "k", 1), newRecord(0, "k", 3000)
	if _, err := q.Append(ctx, []*Record{small, big}); !errors.Is(err, ErrFull) {
		t.Fatalf("Append = %v, want ErrFull", err)
	}
	if n := len(mustRead(t, q, 0, 0, 100)); n != len(recs) {
		t.Fatalf("%d records after ErrFull, want %d", n, len(recs))
	}
	if _, err := q.Lookup(small.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused record is known: %v", err)
	}
	if err := q.Ack(ctx, recs[0], Outcome{Status: StatusDelivered}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-q.Freed():
	case <-time.After(10 * time.Second):
		t.Fatal("Freed did not fire")
	}
	r := newRecord(0, "k", 500)
	if _, err := q.Append(ctx, []*Record{r}); err != nil {
		t.Fatalf("Append after Ack: %v", err)
	}
}

func TestRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	q, err := Open(Options{Path: dir, Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	var recs []*Record
	for i := range 10 {
		r := newRecord(i%2, fmt.Sprintf("k%d", i), 100)
		r.IdempotencyScope = fmt.Sprintf("idem-%s", r.ID)
		recs = append(recs, r)
	}
	mustAppend(t, q, recs...)
	if err := q.Ack(ctx, recs[0], Outcome{Status: StatusDelivered, ResponseStatus: 204}); err != nil {
		t.Fatal(err)
	}
	if err := q.DeadLetter(ctx, recs[1], Outcome{LastError: "boom"}, true); err != nil {
		t.Fatal(err)
	}
	recs[2].Attempts, recs[2].LastError = 2, "timeout"
	if err := q.Nack(ctx, recs[2]); err != nil {
		t.Fatal(err)
	}
	before := q.Stats()
	if err := q.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := q.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := q.Read(0, 0, 10, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if _, err := q.Append(ctx, []*Record{newRecord(0, "k", 1)}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if err := q.Ack(ctx, recs[3], Outcome{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Ack after Close: %v", err)
	}
	if _, err := q.Lookup(recs[3].ID); !errors.Is(err, ErrClosed) {
		t.Fatalf("Lookup after Close: %v", err)
	}

	q = openTest(t, dir, 2)
	after := q.Stats()
	before.DiskBytes, after.DiskBytes = 0, 0 // the store's files change on reopen
	if fmt.Sprint(before) != fmt.Sprint(after) {
		t.Fatalf("stats changed over restart:\nbefore %+v\nafter  %+v", before, after)
	}
	got := mustRead(t, q, 0, 0, 100)
	if fmt.Sprint(ids(got)) != fmt.Sprint([]string{recs[2].ID, recs[4].ID, recs[6].ID, recs[8].ID}) {
		t.Fatalf("partition 0 after restart: %v", ids(got))
	}
	if got[0].Attempts != 2 || got[0].LastError != "timeout" {
		t.Fatalf("nack lost: %+v", got[0])
	}
	if d, err := q.Lookup(recs[0].ID); err != nil || d.Status != StatusDelivered || d.Outcome.ResponseStatus != 204 {
		t.Fatalf("outcome lost: %+v, %v", d, err)
	}
	if d, err := q.Lookup(recs[1].ID); err != nil || d.Status != StatusDead {
		t.Fatalf("dead letter lost: %+v, %v", d, err)
	}
	if p, _ := q.Parked(1); p[recs[1].Key] != recs[1].ID {
		t.Fatalf("park lost: %v", p)
	}
	dup := newRecord(0, "k", 100)
	dup.IdempotencyScope = recs[4].IdempotencyScope
	if res := mustAppend(t, q, dup); !res[0].Duplicate || res[0].ID != recs[4].ID {
		t.Fatalf("idempotency lost: %+v", res)
	}
	// Seq continues.
	r := newRecord(1, "k", 1)
	mustAppend(t, q, r)
	if r.Seq != 6 {
		t.Fatalf("Seq after restart = %d, want 6", r.Seq)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(Options{Partitions: 1}); err == nil {
		t.Fatal("Open without path succeeded")
	}
	if _, err := Open(Options{Path: t.TempDir()}); err == nil {
		t.Fatal("Open without partitions succeeded")
	}
	dir := t.TempDir()
	openTest(t, dir, 1)
	if q, err := Open(Options{Path: dir, Partitions: 1}); err == nil {
		_ = q.Close()
		t.Fatal("second Open of a directory in use succeeded")
	}
}

func TestAppendValidation(t *testing.T) {
	q := openTest(t, t.TempDir(), 2)
	ctx := context.Background()
	r := newRecord(2, "k", 1)
	if _, err := q.Append(ctx, []*Record{r}); err == nil {
		t.Fatal("partition out of range accepted")
	}
	r = newRecord(0, "k", 1)
	r.ID = ""
	if _, err := q.Append(ctx, []*Record{r}); err == nil {
		t.Fatal("empty id accepted")
	}
	if _, err := q.Read(-1, 0, 1, 0); err == nil {
		t.Fatal("Read of partition -1 accepted")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := q.Append(cctx, []*Record{newRecord(0, "k", 1)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with canceled ctx: %v", err)
	}
}

// TestLargeRecords checks records bigger than a Badger transaction's share
// of a memtable, and an Append too big for one write.
func TestLargeRecords(t *testing.T) {
	q := openTest(t, t.TempDir(), 1)
	ctx := context.Background()
	big := newRecord(0, "k", 3<<20)
	mustAppend(t, q, big)
	got := mustRead(t, q, 0, 0, 10)
	if len(got) != 1 || !bytes.Equal(got[0].Body, big.Body) {
		t.Fatal("large record not read back")
	}
	if err := q.Ack(ctx, got[0], Outcome{Status: StatusDelivered}); err != nil {
		t.Fatal(err)
	}
	huge := newRecord(0, "k", MaxRecordBytes+1)
	if _, err := q.Append(ctx, []*Record{huge}); err == nil {
		t.Fatal("record over MaxRecordBytes accepted")
	}
	// Many concurrent medium records: the committer splits its batches.
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := q.Append(ctx, []*Record{newRecord(0, "k", 256<<10)}); err != nil {
				t.Errorf("Append: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := q.Stats().Partitions[0].Records; n != 32 {
		t.Fatalf("%d records, want 32", n)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
