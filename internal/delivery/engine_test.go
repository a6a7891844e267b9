package delivery

import (
	"container/heap"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
	"github.com/flowedge/flowedge/internal/partition"
)

var testRecSeq atomic.Int64

func testRecord(key string, parts int, body string) *buffer.Record {
	return &buffer.Record{
		ID:         fmt.Sprintf("d-%08d", testRecSeq.Add(1)),
		Partition:  partition.OfString(key, parts),
		Key:        key,
		Method:     http.MethodPost,
		Path:       "/events",
		Header:     http.Header{"Content-Type": {"text/plain"}},
		Body:       []byte(body),
		ReceivedAt: time.Now(),
	}
}

func openQueue(t testing.TB, dir string, parts int) buffer.Queue {
	t.Helper()
	q, err := buffer.Open(buffer.Options{Path: dir, Partitions: parts})
	if err != nil {
		t.Fatalf("buffer.Open: %v", err)
	}
	return q
}

func appendRecs(t testing.TB, q buffer.Queue, recs ...*buffer.Record) {
	t.Helper()
	res, err := q.Append(context.Background(), recs)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	for i, r := range res {
		if r.Duplicate {
			t.Fatalf("record %d reported duplicate", i)
		}
	}
}

// startEngine runs an engine on q against srv; cleanup stops it and closes q.
func startEngine(t testing.TB, q buffer.Queue, parts int, srv *httptest.Server, mod func(*Options)) *Engine {
	t.Helper()
	return startEngineTweaked(t, q, parts, srv, mod)
}

// startEngineTweaked is startEngine with changes to the engine before Start.
func startEngineTweaked(t testing.TB, q buffer.Queue, parts int, srv *httptest.Server, mod func(*Options), tweak ...func(*Engine)) *Engine {
	t.Helper()
	opt := Options{
		Queue:          q,
		Partitions:     parts,
		BackendURL:     func(int) string { return srv.URL },
		InitialBackoff: time.Millisecond,
		MaxBackoff:     10 * time.Millisecond,
		Timeout:        5 * time.Second,
	}
	if mod != nil {
		mod(&opt)
	}
	e, err := New(opt)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	for _, f := range tweak {
		f(e)
	}
	e.Start(context.Background())
	t.Cleanup(func() { e.Stop(time.Second); q.Close() })
	return e
}

// waitFor polls cond until it holds; it fails the test after 30s (a bound
// on a hang, far above what a loaded machine needs).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func queueEmpty(q buffer.Queue) func() bool {
	return func() bool {
		for _, p := range q.Stats().Partitions {
			if p.Records != 0 {
				return false
			}
		}
		return true
	}
}

// recorder is a backend that records what arrives, per key and globally,
// and tracks how many requests are in flight.
type recorder struct {
	mu        sync.Mutex
	perKey    map[string][]string // key → bodies, in arrival order
	global    []string            // bodies, in arrival order
	count     int
	inFlight  int
	maxFlight int
	jitter    bool
}

func newRecorder(jitter bool) *recorder {
	return &recorder{perKey: make(map[string][]string), jitter: jitter}
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	key := req.Header.Get("X-Process-ID")
	r.mu.Lock()
	r.inFlight++
	r.maxFlight = max(r.maxFlight, r.inFlight)
	r.perKey[key] = append(r.perKey[key], string(body))
	r.global = append(r.global, string(body))
	r.mu.Unlock()
	if r.jitter {
		time.Sleep(time.Duration(rand.Int64N(int64(2*time.Millisecond) + 1)))
	}
	r.mu.Lock()
	r.inFlight--
	r.count++
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (r *recorder) delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.count
}

func TestEngineOrderingKey(t *testing.T) {
	const parts, nKeys, perKey = 2, 5, 20
	rec := newRecorder(true)
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), parts)

	keys := make([]string, nKeys)
	for k := range keys {
		keys[k] = fmt.Sprintf("proc-%d", k)
	}
	var recs []*buffer.Record
	for i := range perKey {
		for _, k := range keys {
			recs = append(recs, testRecord(k, parts, fmt.Sprintf("%s/%02d", k, i)))
		}
	}
	appendRecs(t, q, recs...)
	startEngine(t, q, parts, srv, func(o *Options) { o.Ordering = OrderKey })

	waitFor(t, "all records delivered", func() bool { return rec.delivered() >= nKeys*perKey })
	waitFor(t, "queue drained", queueEmpty(q))

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.count != nKeys*perKey {
		t.Fatalf("backend got %d requests, want %d", rec.count, nKeys*perKey)
	}
	for _, k := range keys {
		got := rec.perKey[k]
		want := make([]string, perKey)
		for i := range want {
			want[i] = fmt.Sprintf("%s/%02d", k, i)
		}
		if !slices.Equal(got, want) {
			t.Errorf("key %s arrived in order %v, want %v", k, got, want)
		}
	}
	if rec.maxFlight < 2 {
		t.Errorf("at most %d request(s) in flight at once; want keys delivered concurrently", rec.maxFlight)
	}
	t.Logf("max concurrent requests: %d", rec.maxFlight)
}

func TestEngineOrderingPartition(t *testing.T) {
	const parts, nKeys, perKey = 1, 5, 20
	rec := newRecorder(true)
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), parts)

	var recs []*buffer.Record
	var want []string
	for i := range perKey {
		for k := range nKeys {
			body := fmt.Sprintf("proc-%d/%02d", k, i)
			recs = append(recs, testRecord(fmt.Sprintf("proc-%d", k), parts, body))
			want = append(want, body)
		}
	}
	// Two appends: one before Start, one while the engine runs.
	appendRecs(t, q, recs[:50]...)
	startEngine(t, q, parts, srv, func(o *Options) { o.Ordering = OrderPartition; o.MaxInFlight = 32 })
	appendRecs(t, q, recs[50:]...)

	waitFor(t, "all records delivered", func() bool { return rec.delivered() >= len(want) })
	waitFor(t, "queue drained", queueEmpty(q))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if !slices.Equal(rec.global, want) {
		t.Errorf("arrival order\n%v\nwant\n%v", rec.global, want)
	}
	if rec.maxFlight != 1 {
		t.Errorf("max concurrent requests %d, want 1 with ordering partition", rec.maxFlight)
	}
}

func TestEngineParkAndReplay(t *testing.T) {
	const parts = 1
	var (
		mu        sync.Mutex
		arrivals  []string // "body status"
		delivered = map[string]bool{}
		misrouted bool
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b := string(body)
		mu.Lock()
		defer mu.Unlock()
		code := http.StatusOK
		if b == "K/0" && !misrouted {
			misrouted = true
			code = http.StatusMisdirectedRequest
		}
		arrivals = append(arrivals, fmt.Sprintf("%s %d", b, code))
		if code == http.StatusOK {
			delivered[b] = true
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), parts)

	var kRecs []*buffer.Record
	for i := range 5 {
		kRecs = append(kRecs, testRecord("K", parts, fmt.Sprintf("K/%d", i)))
	}
	j0, j1 := testRecord("J", parts, "J/0"), testRecord("J", parts, "J/1")
	appendRecs(t, q, append(kRecs, j0, j1)...)

	e := startEngine(t, q, parts, srv, func(o *Options) { o.OnDead = OnDeadPark })
	isDelivered := func(b string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return delivered[b] }
	}

	// K/0 goes to the dead letters at once (421 is final) and parks K.
	waitFor(t, "K/0 dead", func() bool {
		d, err := q.Lookup(kRecs[0].ID)
		return err == nil && d.Status == buffer.StatusDead
	})
	waitFor(t, "J delivered", isDelivered("J/1"))
	// A record for another key appended after the park still goes through,
	// which shows the loop is running while K waits.
	j2 := testRecord("J", parts, "J/2")
	appendRecs(t, q, j2)
	waitFor(t, "J/2 delivered", isDelivered("J/2"))

	parked, err := q.Parked(0)
	if err != nil {
		t.Fatalf("Parked: %v", err)
	}
	if parked["K"] != kRecs[0].ID {
		t.Fatalf("parked keys %v, want K parked by %s", parked, kRecs[0].ID)
	}
	mu.Lock()
	for _, r := range kRecs[1:] {
		if delivered[string(r.Body)] {
			t.Errorf("%s delivered while K is parked", r.Body)
		}
	}
	mu.Unlock()
	for _, r := range kRecs[1:] {
		v, err := e.Lookup(r.ID)
		if err != nil || v.Status != buffer.StatusQueued {
			t.Errorf("Lookup(%s) = (%+v, %v), want queued", r.Body, v, err)
		}
	}
	if v, err := e.Lookup(kRecs[0].ID); err != nil || v.Status != buffer.StatusDead || v.ResponseStatus != http.StatusMisdirectedRequest || v.Attempts != 1 {
		t.Errorf("Lookup(K/0) = (%+v, %v), want dead after 1 attempt with 421", v, err)
	}

	// Replaying the dead letter delivers it, then the rest of K in order.
	if _, err := e.Replay(context.Background(), kRecs[0].ID); err != nil {
		t.Fatalf("Replay: %v", err)
	}
	waitFor(t, "K delivered", isDelivered("K/4"))
	waitFor(t, "queue drained", queueEmpty(q))

	mu.Lock()
	defer mu.Unlock()
	var kOrder []string
	for _, a := range arrivals {
		if strings.HasPrefix(a, "K/") {
			kOrder = append(kOrder, a)
		}
	}
	want := []string{"K/0 421", "K/0 200", "K/1 200", "K/2 200", "K/3 200", "K/4 200"}
	if !slices.Equal(kOrder, want) {
		t.Errorf("K arrivals %v, want %v", kOrder, want)
	}
	if parked, _ := q.Parked(0); len(parked) != 0 {
		t.Errorf("parked keys after replay: %v", parked)
	}
}

func TestEngineMaxAttemptsDeadLetter(t *testing.T) {
	const parts = 1
	var (
		mu       sync.Mutex
		attempts []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		attempts = append(attempts, r.Header.Get("X-Edge-Attempt"))
		mu.Unlock()
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), parts)
	e := startEngine(t, q, parts, srv, func(o *Options) { o.MaxAttempts = 3 })

	r := testRecord("K", parts, "payload")
	res := submitWait(t, e, r)
	if res.ID != r.ID || res.Status != buffer.StatusDead || res.StatusCode != http.StatusServiceUnavailable || res.Reason == "" {
		t.Fatalf("result = %+v, want dead with status 503 and a reason", res)
	}
	mu.Lock()
	got := slices.Clone(attempts)
	mu.Unlock()
	if want := []string{"1", "2", "3"}; !slices.Equal(got, want) {
		t.Fatalf("X-Edge-Attempt headers %v, want %v", got, want)
	}
	v, err := e.Lookup(r.ID)
	if err != nil || v.Status != buffer.StatusDead || v.Attempts != 3 {
		t.Fatalf("Lookup = (%+v, %v), want dead after 3 attempts", v, err)
	}
	dls, _, err := q.DeadLetters(-1, "", 10)
	if err != nil || len(dls) != 1 || dls[0].Record.ID != r.ID || dls[0].Parked {
		t.Fatalf("DeadLetters = (%+v, %v), want just %s, not parked", dls, err, r.ID)
	}
}

func TestEngineStopHandsBack(t *testing.T) {
	const parts = 1
	release := make(chan struct{})
	entered := make(chan string, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- r.Header.Get("X-Request-ID")
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // before srv.Close
	dir := t.TempDir()
	q := openQueue(t, dir, parts)
	e := startEngine(t, q, parts, srv, nil)

	r := testRecord("K", parts, "blocked")
	appendRecs(t, q, r)
	select {
	case id := <-entered:
		if id != r.ID {
			t.Fatalf("backend got %s, want %s", id, r.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the attempt never reached the backend")
	}

	stopped := make(chan struct{})
	go func() { e.Stop(20 * time.Millisecond); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return after its grace period")
	}
	if err := q.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	q2 := openQueue(t, dir, parts)
	defer q2.Close()
	recs, err := q2.Read(0, 0, 10, 1<<20)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if len(recs) != 1 || recs[0].ID != r.ID || string(recs[0].Body) != "blocked" {
		t.Fatalf("after reopening, queue holds %v, want %s", recs, r.ID)
	}
	if d, err := q2.Lookup(r.ID); err != nil || d.Status != buffer.StatusQueued {
		t.Fatalf("Lookup = (%+v, %v), want queued", d, err)
	}
	if recs[0].Attempts != 0 {
		t.Errorf("abandoned attempt counted: Attempts = %d", recs[0].Attempts)
	}
}

// TestEngineBreakerRecovers: 5xx evidence opens the partition's breaker
// (threshold 1 distinct key here); after the cooldown one probe attempt goes
// through and its success closes it.
func TestEngineBreakerRecovers(t *testing.T) {
	const parts = 1
	var (
		mu       sync.Mutex
		attempts []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		attempts = append(attempts, r.Header.Get("X-Edge-Attempt"))
		n := len(attempts)
		mu.Unlock()
		if n <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), parts)
	e, err := New(Options{
		Queue: q, Partitions: parts, BackendURL: func(int) string { return srv.URL },
		InitialBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, Timeout: 5 * time.Second,
		BreakerFailures: 1, BreakerCooldown: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.Start(context.Background())
	// Stop is bounded here: a worker stuck in the gate would hang it forever.
	t.Cleanup(func() {
		stopped := make(chan struct{})
		go func() { e.Stop(time.Second); q.Close(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second): // a hang bound: was 2 s, within reach of a slow CI machine's queue close
			t.Error("Stop did not return: a worker is stuck")
		}
	})

	r := testRecord("K", parts, "x")
	if res := submitWait(t, e, r); res.Status != buffer.StatusDelivered || res.StatusCode != http.StatusOK {
		t.Fatalf("result = %+v, want delivered 200", res)
	}
	mu.Lock()
	got := slices.Clone(attempts)
	mu.Unlock()
	if want := []string{"1", "2", "3"}; !slices.Equal(got, want) {
		t.Errorf("X-Edge-Attempt headers %v, want %v", got, want)
	}
	if ok, br := e.PartitionReady(0); !ok || br != BreakerClosed {
		t.Errorf("PartitionReady = (%v, %q), want (true, closed)", ok, br)
	}
}

// submitWait submits rec through the engine and waits for its result.
func submitWait(t *testing.T, e *Engine, rec *buffer.Record) Result {
	t.Helper()
	tk, err := e.Submit(context.Background(), rec)
	if err != nil {
		t.Fatalf("Submit: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, ok := tk.Wait(ctx)
	if !ok {
		t.Fatalf("no result for %s within 10s", rec.ID)
	}
	return res
}

// TestSpillBlockedKey pins the stall where a key that keeps failing, with a
// backlog larger than the partition's in-memory window, filled the window
// and held up every other key of its partition: the blocked key's later
// records go back to disk and are read again, in order, once it recovers.
func TestSpillBlockedKey(t *testing.T) {
	const parts = 1
	var broken atomic.Bool
	broken.Store(true)
	store := newDedupeStore()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Process-ID") == "poison" && broken.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		store.apply(r)
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), parts)
	var recs []*buffer.Record
	for i := range 100 {
		recs = append(recs, testRecord("poison", parts, fmt.Sprintf("poison/%02d", i)))
	}
	others := []string{"a", "b", "c", "d", "e"}
	for i := range 10 {
		for _, k := range others {
			recs = append(recs, testRecord(k, parts, fmt.Sprintf("%s/%02d", k, i)))
		}
	}
	appendRecs(t, q, recs...)
	startEngine(t, q, parts, srv, func(o *Options) {
		o.Window = 16
		o.MaxInFlight = 4
		o.BreakerFailures = 1000 // this test is about the window, not the breaker
	})
	waitFor(t, "the other keys delivered while the poison key fails", func() bool { return store.effects() == 50 })
	broken.Store(false)
	waitFor(t, "the poison key delivered once it recovers", func() bool { return store.effects() == 150 })
	waitFor(t, "queue drained", queueEmpty(q))
	checkOrder(t, store, others, 10)
	checkOrder(t, store, []string{"poison"}, 100)
}

// TestSpillParkedKey: with on_dead = "park", a parked key whose backlog
// exceeds the window does not hold up other keys; once its dead letter is
// discarded its records follow in order.
func TestSpillParkedKey(t *testing.T) {
	const parts = 1
	var broken atomic.Bool
	broken.Store(true)
	store := newDedupeStore()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Process-ID") == "parked" && broken.Load() {
			w.WriteHeader(http.StatusMisdirectedRequest) // dead letter at once
			return
		}
		store.apply(r)
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), parts)
	var recs []*buffer.Record
	for i := range 60 {
		recs = append(recs, testRecord("parked", parts, fmt.Sprintf("parked/%02d", i)))
	}
	others := []string{"a", "b", "c"}
	for i := range 10 {
		for _, k := range others {
			recs = append(recs, testRecord(k, parts, fmt.Sprintf("%s/%02d", k, i)))
		}
	}
	appendRecs(t, q, recs...)
	e := startEngine(t, q, parts, srv, func(o *Options) {
		o.Window = 16
		o.MaxInFlight = 4
		o.OnDead = OnDeadPark
	})
	waitFor(t, "the other keys delivered while the key is parked", func() bool { return store.effects() == 30 })
	broken.Store(false)
	if err := e.Discard(context.Background(), recs[0].ID); err != nil {
		t.Fatalf("Discard: %v", err)
	}
	waitFor(t, "the parked key's records delivered after the discard", func() bool { return store.effects() == 89 })
	waitFor(t, "queue drained", queueEmpty(q))
	checkOrder(t, store, others, 10)
	store.mu.Lock()
	got := store.perKey["parked"]
	store.mu.Unlock()
	for i, b := range got {
		if want := fmt.Sprintf("parked/%02d", i+1); b != want {
			t.Fatalf("parked key applied %v..., want parked/01.. in order", got[:min(len(got), 5)])
		}
	}
}

// TestReplayCallerGone pins a record left stuck by Replay when its caller
// hung up mid-call (an admin client that timed out): the queue write could
// commit although Replay returned the context's error, and the record put
// back below the partition loop's cursor was handed to the loop in a
// select that also gave up on the caller's context (Go picks a ready case
// at random). Either way the loop never heard of it: the record sat in the
// queue, undelivered and its key parked, until a restart.
func TestReplayCallerGone(t *testing.T) {
	const n = 12
	var mu sync.Mutex
	dead := true
	delivered := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if dead {
			w.WriteHeader(http.StatusMisdirectedRequest) // dead letter at once
			return
		}
		delivered[string(body)] = true
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), 1)
	var recs []*buffer.Record
	for i := range n {
		recs = append(recs, testRecord(fmt.Sprintf("k%d", i), 1, fmt.Sprintf("r%d", i)))
	}
	appendRecs(t, q, recs...)
	e := startEngine(t, q, 1, srv, func(o *Options) { o.OnDead = OnDeadPark })
	waitFor(t, "all dead", func() bool {
		for _, r := range recs {
			if d, err := q.Lookup(r.ID); err != nil || d.Status != buffer.StatusDead {
				return false
			}
		}
		return true
	})
	mu.Lock()
	dead = false
	mu.Unlock()
	for _, r := range recs {
		if _, err := e.Replay(&hangUpCtx{Context: context.Background()}, r.ID); err != nil {
			t.Fatalf("Replay %s: %v", r.ID, err)
		}
	}
	waitFor(t, "every replayed record delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(delivered) == n
	})
}

// hangUpCtx is a caller that hangs up once its call has begun: Err is nil
// on the first check, and from then on it is done.
type hangUpCtx struct {
	context.Context
	checks atomic.Int32
}

var closedCh = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (c *hangUpCtx) Done() <-chan struct{} {
	if c.checks.Load() == 0 {
		return nil
	}
	return closedCh
}

func (c *hangUpCtx) Err() error {
	if c.checks.Add(1) == 1 {
		return nil
	}
	return context.Canceled
}

// TestReplayBeforeDeadReport pins a record left stuck when its dead letter
// was replayed, or discarded, before the worker's report of its death
// reached the partition loop (the dead letter is on disk first, so an
// admin's replay can win that race; TestReplayCallerGone failed now and
// then on it): the loop dropped the replay as a duplicate of the record it
// still held, or lifted a park not yet recorded, and the report then parked
// the key. The record sat undelivered and its key parked until a restart.
// The race is played here in the losing order, on a loop that is not
// running.
func TestReplayBeforeDeadReport(t *testing.T) {
	for _, discard := range []bool{false, true} {
		q := openQueue(t, t.TempDir(), 1)
		t.Cleanup(func() { q.Close() })
		e, err := New(Options{Queue: q, Partitions: 1, BackendURL: func(int) string { return "http://127.0.0.1:1" },
			OnDead: OnDeadPark})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		l := e.loops[0]
		rec := testRecord("K", 1, "x")
		appendRecs(t, q, rec)
		if err := l.fill(); err != nil {
			t.Fatalf("fill: %v", err)
		}
		l.dispatch(time.Now())
		j := <-l.jobs
		if len(j.items) != 1 || j.items[0].rec.ID != rec.ID {
			t.Fatalf("dispatched %+v, want the record", j.items)
		}
		again := *j.items[0].rec
		again.Attempts = 0
		if discard {
			l.unpark(&buffer.Record{ID: rec.ID, Key: rec.Key})
		} else {
			l.addReplayed(&again)
		}
		l.complete(report{job: j, fates: []int{fateDead}})

		if id, ok := l.parked["K"]; ok {
			t.Errorf("discard %v: key K parked by %s after the dead letter was handled", discard, id)
		}
		_, held := l.live[rec.ID]
		if !discard && (!held || l.ready.Len() != 1) {
			t.Errorf("replayed record held %v, candidates %d: want it back in the window, ready to send", held, l.ready.Len())
		}
		if discard && held {
			t.Error("discarded record still held")
		}
	}
}

// TestJobNeverHoldsARecordTwice: a record with two entries in the ready
// heap goes once. Regression: a replay keeps its Seq and becomes its key's
// head, leaving the old head's heap entry behind; when the replay finished
// the old head was pushed again, and a batch or pipelined job could take
// both entries: two requests for one record and two settles of one item.
func TestJobNeverHoldsARecordTwice(t *testing.T) {
	for _, protocol := range []string{ProtocolRequest, ProtocolBatch} {
		q := openQueue(t, t.TempDir(), 1)
		t.Cleanup(func() { q.Close() })
		e, err := New(Options{Queue: q, Partitions: 1, BackendURL: func(int) string { return "http://127.0.0.1:1" },
			Protocol: protocol, Pipeline: 8})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		l := e.loops[0]
		l.pipe = 8 // as start sets it for a plain-HTTP backend
		appendRecs(t, q, testRecord("K", 1, "x"), testRecord("L", 1, "y"))
		if err := l.fill(); err != nil {
			t.Fatalf("fill: %v", err)
		}
		if l.ready.Len() != 2 {
			t.Fatalf("%d ready, want 2", l.ready.Len())
		}
		heap.Push(&l.ready, l.ready[0]) // the stale second entry
		l.dispatch(time.Now())
		j := <-l.jobs
		seen := map[string]bool{}
		for _, it := range j.items {
			if seen[it.rec.ID] {
				t.Errorf("%s: record %s twice in one job", protocol, it.rec.ID)
			}
			seen[it.rec.ID] = true
		}
		if len(seen) != 2 {
			t.Errorf("%s: job holds %d records, want both", protocol, len(seen))
		}
	}
}
