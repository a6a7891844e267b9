package delivery

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
)

// dedupeStore is a backend's effect log: it applies a request once per
// X-Request-ID (as api-flow does) and keeps each key's effects in order.
type dedupeStore struct {
	mu      sync.Mutex
	applied map[string]bool
	hits    map[string]int
	perKey  map[string][]string
	batches int
	sizes   []int
	keysIn  [][]string // keys of each batch
	targets map[string]string
}

func newDedupeStore() *dedupeStore {
	return &dedupeStore{applied: map[string]bool{}, hits: map[string]int{}, perKey: map[string][]string{}, targets: map[string]string{}}
}

func (s *dedupeStore) apply(r *http.Request) (hit int) {
	body, _ := io.ReadAll(r.Body)
	id, key := r.Header.Get("X-Request-ID"), r.Header.Get("X-Process-ID")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hits[id]++
	s.targets[id] = r.RequestURI
	if !s.applied[id] {
		s.applied[id] = true
		s.perKey[key] = append(s.perKey[key], string(body))
	}
	return s.hits[id]
}

func (s *dedupeStore) effects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.applied)
}

// batchServer serves POST /_edge/batch: each part through part() in order;
// part returns the status to answer (the store has applied it unless it
// says otherwise). cut > 0 hangs up after that many answer parts, once.
type batchServer struct {
	store *dedupeStore
	part  func(r *http.Request, hit int) int
	mu    sync.Mutex
	cut   int
}

func (b *batchServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/_edge/batch" {
		b.store.apply(r)
		w.WriteHeader(http.StatusCreated)
		return
	}
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
		return
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	var statuses []int
	var keys []string
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req, err := http.ReadRequest(bufio.NewReader(p))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		keys = append(keys, req.Header.Get("X-Process-ID"))
		hit := b.store.apply(req)
		st := http.StatusCreated
		if b.part != nil {
			st = b.part(req, hit)
		}
		statuses = append(statuses, st)
	}
	b.store.mu.Lock()
	b.store.batches++
	b.store.sizes = append(b.store.sizes, len(statuses))
	b.store.keysIn = append(b.store.keysIn, keys)
	b.store.mu.Unlock()
	b.mu.Lock()
	cut := b.cut
	b.cut = 0
	b.mu.Unlock()

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	var partEnds []int
	for _, st := range statuses {
		pw, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/http"}})
		fmt.Fprintf(pw, "HTTP/1.1 %d %s\r\nContent-Length: 2\r\n\r\nok", st, http.StatusText(st))
		partEnds = append(partEnds, buf.Len())
	}
	mw.Close()
	if cut > 0 && cut < len(statuses) {
		// Hang up after `cut` complete parts.
		hj, _ := w.(http.Hijacker)
		conn, bw, err := hj.Hijack()
		if err != nil {
			return
		}
		fmt.Fprintf(bw, "HTTP/1.1 200 OK\r\nContent-Type: multipart/mixed; boundary=%s\r\nConnection: close\r\n\r\n", mw.Boundary())
		bw.Write(buf.Bytes()[:partEnds[cut-1]])
		bw.Flush()
		conn.Close()
		return
	}
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	w.Write(buf.Bytes())
}

func batchOptions(o *Options) {
	o.Protocol = ProtocolBatch
	o.BatchMax = 8
}

// keysRecords makes perKey records for each of n keys, interleaved.
func keysRecords(parts, n, perKey int) ([]*buffer.Record, []string) {
	keys := make([]string, n)
	for k := range keys {
		keys[k] = fmt.Sprintf("proc-%d", k)
	}
	var recs []*buffer.Record
	for i := range perKey {
		for _, k := range keys {
			recs = append(recs, testRecord(k, parts, fmt.Sprintf("%s/%02d", k, i)))
		}
	}
	return recs, keys
}

func checkOrder(t *testing.T, s *dedupeStore, keys []string, perKey int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		want := make([]string, perKey)
		for i := range want {
			want[i] = fmt.Sprintf("%s/%02d", k, i)
		}
		if got := s.perKey[k]; !slices.Equal(got, want) {
			t.Errorf("key %s applied as %v, want %v (once each, in order)", k, got, want)
		}
	}
}

// TestBatchOrderAndDistinctKeys: batch delivery applies every record once,
// in order per key, and a batch never holds two records of one key.
func TestBatchOrderAndDistinctKeys(t *testing.T) {
	const parts, nKeys, perKey = 1, 12, 10
	store := newDedupeStore()
	srv := httptest.NewServer(&batchServer{store: store})
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), parts)
	recs, keys := keysRecords(parts, nKeys, perKey)
	recs[0].Path, recs[0].RawQuery = "/p/a%2Fb%3F", "x=%25" // faithful inside batches too
	appendRecs(t, q, recs...)
	startEngine(t, q, parts, srv, batchOptions)
	waitFor(t, "all applied", func() bool { return store.effects() == len(recs) })
	waitFor(t, "queue drained", queueEmpty(q))
	checkOrder(t, store, keys, perKey)
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.batches == 0 || slices.Max(store.sizes) < 2 {
		t.Errorf("batches %d, sizes %v: want records sent in batches", store.batches, store.sizes)
	}
	for i, ks := range store.keysIn {
		sorted := slices.Clone(ks)
		slices.Sort(sorted)
		if len(slices.Compact(sorted)) != len(ks) {
			t.Errorf("batch %d holds a key twice: %v", i, ks)
		}
		if len(ks) > 8 {
			t.Errorf("batch %d holds %d records, batch_max is 8", i, len(ks))
		}
	}
	if got := store.targets[recs[0].ID]; got != "/p/a%2Fb%3F?x=%25" {
		t.Errorf("target inside a batch = %q, want /p/a%%2Fb%%3F?x=%%25", got)
	}
}

// TestBatchPartFailure: a part answered 503 is retried alone (its key waits,
// others go on) and applied exactly once, in order.
func TestBatchPartFailure(t *testing.T) {
	const parts, nKeys, perKey = 1, 6, 8
	store := newDedupeStore()
	srv := httptest.NewServer(&batchServer{store: store, part: func(r *http.Request, hit int) int {
		// proc-3's records fail twice each (the backend applied nothing).
		if r.Header.Get("X-Process-ID") == "proc-3" && hit <= 2 {
			store.mu.Lock()
			delete(store.applied, r.Header.Get("X-Request-ID"))
			k := r.Header.Get("X-Process-ID")
			store.perKey[k] = store.perKey[k][:len(store.perKey[k])-1]
			store.mu.Unlock()
			return http.StatusServiceUnavailable
		}
		return http.StatusCreated
	}})
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), parts)
	recs, keys := keysRecords(parts, nKeys, perKey)
	appendRecs(t, q, recs...)
	startEngine(t, q, parts, srv, batchOptions)
	waitFor(t, "all applied", func() bool { return store.effects() == len(recs) })
	waitFor(t, "queue drained", queueEmpty(q))
	checkOrder(t, store, keys, perKey)
}

// TestBatchConnectionCut: the backend applies a whole batch but the
// connection breaks after k answer parts; the unanswered records are sent
// again and deduped by X-Request-ID: every record applied exactly once, in
// order per key.
func TestBatchConnectionCut(t *testing.T) {
	const parts, nKeys, perKey = 1, 8, 6
	store := newDedupeStore()
	bs := &batchServer{store: store, cut: 3}
	srv := httptest.NewServer(bs)
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), parts)
	recs, keys := keysRecords(parts, nKeys, perKey)
	appendRecs(t, q, recs...)
	startEngine(t, q, parts, srv, batchOptions)
	waitFor(t, "all applied", func() bool { return store.effects() == len(recs) })
	waitFor(t, "queue drained", queueEmpty(q))
	checkOrder(t, store, keys, perKey)
	store.mu.Lock()
	defer store.mu.Unlock()
	repeats := 0
	for _, n := range store.hits {
		if n > 1 {
			repeats++
		}
	}
	if repeats == 0 {
		t.Error("no record was sent twice: the cut did not happen")
	}
}

// TestBatchFallback: a backend that answers 404 to the batch endpoint gets
// single requests from then on (logged once); nothing is dead-lettered and
// no attempt is burnt by the refused batch.
func TestBatchFallback(t *testing.T) {
	const parts, nKeys, perKey = 1, 4, 5
	var (
		mu       sync.Mutex
		batches  int
		attempts []string
	)
	store := newDedupeStore()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_edge/batch" {
			mu.Lock()
			batches++
			mu.Unlock()
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		attempts = append(attempts, r.Header.Get("X-Edge-Attempt"))
		mu.Unlock()
		store.apply(r)
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	var logBuf syncBuffer
	q := openQueue(t, t.TempDir(), parts)
	recs, keys := keysRecords(parts, nKeys, perKey)
	appendRecs(t, q, recs...)
	e := startEngine(t, q, parts, srv, func(o *Options) {
		batchOptions(o)
		o.Logger = slog.New(slog.NewTextHandler(&logBuf, nil))
	})
	waitFor(t, "all applied", func() bool { return store.effects() == len(recs) })
	waitFor(t, "queue drained", queueEmpty(q))
	checkOrder(t, store, keys, perKey)
	if n := strings.Count(logBuf.String(), "protocol fallback"); n != 1 {
		t.Errorf("fallback logged %d times, want once:\n%s", n, logBuf.String())
	}
	if p := e.Partitions()[0]; p.Protocol != ProtocolRequest || p.DeadLetters != 0 {
		t.Errorf("partition = %+v, want protocol request and no dead letters", p)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range attempts {
		if a != "1" {
			t.Errorf("X-Edge-Attempt %s: the refused batch burnt an attempt", a)
		}
	}
	if batches > 4 {
		t.Errorf("%d batch requests after the first 404, want the partition to stop batching", batches)
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
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

// TestBatchTooLarge pins a stall: a backend whose body limit is below
// batch_bytes answers the envelope 413; that was taken as a connection
// error for every record of the batch (evidence the backend is down), so
// the same records were batched and refused again and again, the breaker
// opened, and nothing was ever delivered. A 413 envelope sends that
// batch's records as single requests.
func TestBatchTooLarge(t *testing.T) {
	const parts, nKeys, perKey = 1, 8, 3
	store := newDedupeStore()
	bs := &batchServer{store: store}
	var refused atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_edge/batch" && r.ContentLength > 600 {
			refused.Add(1)
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		bs.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), parts)
	recs, keys := keysRecords(parts, nKeys, perKey)
	appendRecs(t, q, recs...)
	e := startEngine(t, q, parts, srv, func(o *Options) {
		batchOptions(o)
		o.BreakerFailures = 2
		o.BreakerCooldown = time.Hour
	})
	waitFor(t, "queue drained", queueEmpty(q))
	checkOrder(t, store, keys, perKey)
	if refused.Load() == 0 {
		t.Fatal("no batch was refused: the test does not exercise 413")
	}
	if _, br := e.PartitionReady(0); br != BreakerClosed {
		t.Errorf("breaker %s after 413 envelopes, want closed", br)
	}
}

// TestBatchEnvelopeRefused pins a stall: a batch envelope answered with a
// 4xx other than 404/405/408/413/415/429 (400, 401, 403, 422: the backend
// refused the envelope, it is not down) was taken as a connection error for
// every record of the batch, so the same records were batched and refused
// forever and counted toward the breaker, which opened. Such an envelope
// now sends that batch's records as single requests, like 413, and the
// breaker hears no evidence.
func TestBatchEnvelopeRefused(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusUnprocessableEntity} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			const parts, nKeys, perKey = 1, 8, 3
			store := newDedupeStore()
			var refused, singles atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/_edge/batch" {
					refused.Add(1)
					http.Error(w, "refused", status)
					return
				}
				singles.Add(1)
				store.apply(r)
				w.WriteHeader(http.StatusCreated)
			}))
			t.Cleanup(srv.Close)
			q := openQueue(t, t.TempDir(), parts)
			recs, keys := keysRecords(parts, nKeys, perKey)
			appendRecs(t, q, recs...)
			e := startEngine(t, q, parts, srv, func(o *Options) {
				batchOptions(o)
				o.BreakerFailures = 2
				o.BreakerCooldown = time.Hour
			})
			waitFor(t, "queue drained", queueEmpty(q))
			checkOrder(t, store, keys, perKey)
			if refused.Load() == 0 {
				t.Fatalf("no batch was refused: the test does not exercise a %d envelope", status)
			}
			if singles.Load() < nKeys*perKey {
				t.Errorf("%d single requests, want at least %d", singles.Load(), nKeys*perKey)
			}
			if _, br := e.PartitionReady(0); br != BreakerClosed {
				t.Errorf("breaker %s after %d envelopes, want closed", br, status)
			}
		})
	}
}

// idleLoop returns the loop of a one-partition engine over a fresh queue,
// never started: the test drives it (dispatch, complete) with its own clock.
// arrive appends a record for each key and has the loop read them.
func idleLoop(t *testing.T, o Options) (*loop, func(keys ...string)) {
	t.Helper()
	q := openQueue(t, t.TempDir(), 1)
	t.Cleanup(func() { q.Close() })
	o.Queue, o.Partitions, o.BackendURL = q, 1, func(int) string { return "http://127.0.0.1:1" }
	e, err := New(o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	l := e.loops[0]
	return l, func(keys ...string) {
		t.Helper()
		for _, k := range keys {
			appendRecs(t, q, testRecord(k, 1, k))
		}
		l.atEnd = false // as the queue's notification sets it
		if err := l.fill(); err != nil {
			t.Fatalf("fill: %v", err)
		}
	}
}

// TestBatchesGatherBehindOneInFlight: while a batch is in flight, the
// records that arrive go together in the partition's next batch, sent when
// the first answers or batchStagger after it went. Before, every arrival
// was sent at once, up to four batches in flight: a busy partition sent
// many batches of a few records each, and api-flow spends about 1.5 times
// the CPU per record on batches of 4 as on batches of 16 or 64
// (BenchmarkEventBatch in internal/api). Played on a loop that is not
// running, with its clock passed in.
func TestBatchesGatherBehindOneInFlight(t *testing.T) {
	l, arrive := idleLoop(t, Options{Protocol: ProtocolBatch})
	sent := func(want ...string) *job {
		t.Helper()
		if len(l.jobs) != 1 {
			t.Fatalf("%d jobs handed out, want one batch of %v", len(l.jobs), want)
		}
		j := <-l.jobs
		var got []string
		for _, it := range j.items {
			got = append(got, it.rec.Key)
		}
		slices.Sort(got)
		if !j.batch || !slices.Equal(got, want) {
			t.Fatalf("sent %v (batch %v), want one batch of %v", got, j.batch, want)
		}
		return j
	}

	t0 := time.Now()
	arrive("A")
	l.dispatch(t0)
	first := sent("A") // nothing in flight: at once
	for i, k := range []string{"B", "C", "D"} {
		arrive(k)
		_, wake := l.dispatch(t0.Add(time.Duration(i+1) * time.Millisecond))
		if len(l.jobs) != 0 {
			t.Fatalf("%s sent at once beside the batch in flight, want it kept for the next batch", k)
		}
		if want := t0.Add(batchStagger); !wake.Equal(want) {
			t.Fatalf("loop wakes at %v, want batchStagger after the first batch (%v)", wake, want)
		}
	}
	l.dispatch(t0.Add(batchStagger)) // the first is slow: the next goes anyway
	second := sent("B", "C", "D")

	arrive("E", "F")
	l.dispatch(t0.Add(batchStagger + time.Millisecond))
	if len(l.jobs) != 0 {
		t.Fatal("E and F sent at once beside the second batch")
	}
	l.complete(report{job: first, fates: []int{fateFinal}})
	l.complete(report{job: second, fates: []int{fateFinal, fateFinal, fateFinal}})
	l.dispatch(t0.Add(batchStagger + 2*time.Millisecond)) // answered: at once
	sent("E", "F")
}

// TestFullBatchGoesBesideOneInFlight: a full batch does not wait behind the
// one in flight when max_in_flight leaves room for it (waiting would not
// make it larger), so a backlog drains with several batches in flight.
func TestFullBatchGoesBesideOneInFlight(t *testing.T) {
	l, arrive := idleLoop(t, Options{Protocol: ProtocolBatch, BatchMax: 4, MaxInFlight: 16})
	arrive("A", "B", "C", "D", "E", "F", "G", "H", "I")
	t0 := time.Now()
	l.dispatch(t0)
	var sizes []int
	for len(l.jobs) > 0 {
		sizes = append(sizes, len((<-l.jobs).items))
	}
	// Two full batches at once; the ninth record waits for an answer.
	if !slices.Equal(sizes, []int{4, 4}) {
		t.Fatalf("batches sent at once: %v, want [4 4]", sizes)
	}

	// Without room for a whole second batch, it waits like any other.
	l2, arrive2 := idleLoop(t, Options{Protocol: ProtocolBatch, BatchMax: 4, MaxInFlight: 6})
	arrive2("A", "B", "C", "D", "E", "F", "G", "H")
	l2.dispatch(t0)
	if len(l2.jobs) != 1 || len((<-l2.jobs).items) != 4 {
		t.Fatal("with max_in_flight 6 and batches of 4, want one batch sent and the rest kept behind it")
	}
}

// TestHungBatchDoesNotHoldPartition: a batch the backend does not answer
// holds back the rest of its partition for batchStagger, not until the
// delivery timeout: other keys go in the next batch meanwhile. (Red with
// one batch in flight per partition and no stagger; whether the others
// arrive within batchStagger of the stuck batch or later depends on the
// machine's speed, TestBatchesGatherBehindOneInFlight pins the wait itself.)
func TestHungBatchDoesNotHoldPartition(t *testing.T) {
	store := newDedupeStore()
	release := make(chan struct{})
	srv := httptest.NewServer(&batchServer{store: store, part: func(r *http.Request, _ int) int {
		if r.Header.Get("X-Process-ID") == "stuck" {
			<-release
		}
		return http.StatusCreated
	}})
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), 1)
	appendRecs(t, q, testRecord("stuck", 1, "s"))
	startEngine(t, q, 1, srv, func(o *Options) {
		batchOptions(o)
		o.Timeout = 10 * time.Minute
	})
	t.Cleanup(func() { close(release) }) // first: the engine's stop and srv.Close wait for the handler
	waitFor(t, "the stuck batch at the backend", func() bool {
		store.mu.Lock()
		defer store.mu.Unlock()
		return len(store.hits) == 1
	})
	others, _ := keysRecords(1, 5, 1)
	appendRecs(t, q, others...)
	waitFor(t, "the other keys applied while the stuck batch hangs", func() bool { return store.effects() == 1+len(others) })
}
