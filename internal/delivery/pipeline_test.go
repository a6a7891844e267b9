package delivery

import (
	"bytes"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
)

// pipeBackend is a backend that records, per key, the bodies it processed
// in order (first processing of each X-Request-ID only), every
// X-Edge-Attempt it saw, and how many requests it processed.
type pipeBackend struct {
	mu       sync.Mutex
	perKey   map[string][]string // key → bodies, first processing of each id, in order
	seen     map[string]bool     // X-Request-ID processed
	attempts map[string][]string // X-Request-ID → X-Edge-Attempt of each processing
	hits     int
}

func newPipeBackend() *pipeBackend {
	return &pipeBackend{perKey: map[string][]string{}, seen: map[string]bool{}, attempts: map[string][]string{}}
}

func (b *pipeBackend) record(r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id, key := r.Header.Get("X-Request-ID"), r.Header.Get("X-Process-ID")
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hits++
	b.attempts[id] = append(b.attempts[id], r.Header.Get("X-Edge-Attempt"))
	if !b.seen[id] {
		b.seen[id] = true
		b.perKey[key] = append(b.perKey[key], string(body))
	}
}

// check fails t unless every record of recs was processed and each key's
// first processings came in the records' order.
func (b *pipeBackend) check(t *testing.T, recs []*buffer.Record) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	want := map[string][]string{}
	for _, r := range recs {
		if !b.seen[r.ID] {
			t.Errorf("%s (key %s) never reached the backend", r.ID, r.Key)
		}
		want[r.Key] = append(want[r.Key], string(r.Body))
	}
	for k, w := range want {
		if got := b.perKey[k]; !slices.Equal(got, w) {
			t.Errorf("key %s first deliveries in order %v, want %v", k, got, w)
		}
	}
}

// countingListener counts, over all its connections, the largest number of
// requests that arrived in one read: more than one means they were
// pipelined (written before the previous answer was read).
type countingListener struct {
	net.Listener
	most atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, l: l}, nil
}

type countingConn struct {
	net.Conn
	l *countingListener
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if k := int64(bytes.Count(p[:n], []byte(" HTTP/1.1\r\n"))); k > c.l.most.Load() {
		c.l.most.Store(k) // one reader per conn; a lost race only undercounts
	}
	return n, err
}

// statusFor is the 2xx status the backend of TestPipelineDelivers answers
// to request id.
func statusFor(id string) int {
	h := fnv.New32a()
	h.Write([]byte(id))
	return 200 + int(h.Sum32()%7)
}

// pipeRecords makes perKey records for each of nKeys keys, interleaved.
func pipeRecords(nKeys, perKey int) []*buffer.Record {
	var recs []*buffer.Record
	for i := range perKey {
		for k := range nKeys {
			recs = append(recs, testRecord(fmt.Sprintf("k%02d", k), 1, fmt.Sprintf("k%02d/%03d", k, i)))
		}
	}
	return recs
}

func noDeadLetters(t *testing.T, q buffer.Queue) {
	t.Helper()
	for p, s := range q.Stats().Partitions {
		if s.DeadLetters != 0 {
			t.Errorf("partition %d: %d dead letters, want none", p, s.DeadLetters)
		}
	}
}

// TestPipelineDelivers pins pipelining's basic promise: with pipeline 8 and
// many keys every record is delivered once, each key's records in order,
// each record's outcome holds the answer to its own request (the backend
// answers a status derived from X-Request-ID; a delivered outcome keeps its
// status only), and requests really go several to a write (the
// backend reads more than one request at a time).
func TestPipelineDelivers(t *testing.T) {
	b := newPipeBackend()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.record(r)
		w.WriteHeader(statusFor(r.Header.Get("X-Request-ID")))
	}))
	cl := &countingListener{Listener: srv.Listener}
	srv.Listener = cl
	srv.Start()
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), 1)
	recs := pipeRecords(40, 25)
	appendRecs(t, q, recs...)
	startEngine(t, q, 1, srv, func(o *Options) { o.Pipeline = 8; o.MaxInFlight = 16 })
	waitFor(t, "queue drained", queueEmpty(q))
	b.check(t, recs)
	b.mu.Lock()
	hits := b.hits
	b.mu.Unlock()
	if hits != len(recs) {
		t.Errorf("backend processed %d requests, want %d (each once)", hits, len(recs))
	}
	for _, r := range recs {
		d, err := q.Lookup(r.ID)
		if err != nil || d.Outcome == nil {
			t.Errorf("%s: no outcome (%v)", r.ID, err)
		} else if got, want := d.Outcome.ResponseStatus, statusFor(r.ID); got != want {
			t.Errorf("%s: outcome status %d, want %d (the answer to another request)", r.ID, got, want)
		}
	}
	if cl.most.Load() < 2 {
		t.Errorf("at most %d request(s) arrived in one read: not pipelined", cl.most.Load())
	}
	noDeadLetters(t, q)
}

// TestPipelineConnectionClose pins the Connection: close rule: a backend
// that ends the connection after every answer (so it never processes the
// requests pipelined behind it) still gets every record, none is
// dead-lettered, and the requests sent again carry X-Edge-Attempt 1 (an
// unprocessed pipelined request burns no attempt). MaxAttempts 2 makes a
// burnt attempt visible as a dead letter too.
func TestPipelineConnectionClose(t *testing.T) {
	b := newPipeBackend()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.record(r)
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), 1)
	recs := pipeRecords(16, 10)
	appendRecs(t, q, recs...)
	startEngine(t, q, 1, srv, func(o *Options) { o.Pipeline = 8; o.MaxInFlight = 8; o.MaxAttempts = 2 })
	waitFor(t, "queue drained", queueEmpty(q))
	b.check(t, recs)
	noDeadLetters(t, q)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range recs {
		if a := b.attempts[r.ID]; !slices.Equal(a, []string{"1"}) {
			t.Errorf("%s: X-Edge-Attempt seen %v, want [1] (an unsent pipelined request counted as an attempt)", r.ID, a)
		}
	}
}

type connCountKey struct{}

// TestPipelineCutConnection pins the broken-connection rule: a backend
// whose every connection is cut (hijacked and closed, no answer) at its
// third request leaves the requests after it to the normal retry path:
// every record is delivered at least once, each key's first deliveries keep
// their order, and nothing is dead-lettered.
func TestPipelineCutConnection(t *testing.T) {
	const cutAt = 3
	b := newPipeBackend()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(connCountKey{}).(*atomic.Int64).Add(1) == cutAt {
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		b.record(r)
		w.WriteHeader(http.StatusCreated)
	}))
	srv.Config.ConnContext = func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connCountKey{}, new(atomic.Int64))
	}
	srv.Start()
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), 1)
	recs := pipeRecords(16, 10)
	appendRecs(t, q, recs...)
	startEngine(t, q, 1, srv, func(o *Options) {
		o.Pipeline = 8
		o.MaxInFlight = 8
		o.BreakerCooldown = 10 * time.Millisecond // bounds the test's time if the breaker opens
	})
	waitFor(t, "queue drained", queueEmpty(q))
	b.check(t, recs)
	noDeadLetters(t, q)
}

// TestPipelineSlowHead pins the per-answer deadline: when the first request
// of a pipelined job outlasts the timeout, only it counts an attempt; the
// requests behind it go again as unsent (X-Edge-Attempt stays 1) instead of
// all timing out together. Regression: one deadline covered the whole
// exchange, so a slow record burnt an attempt of every record pipelined
// behind it (each a distinct key's timeout, enough to open the breaker),
// and could dead-letter them although the backend processed them.
func TestPipelineSlowHead(t *testing.T) {
	b := newPipeBackend()
	var slowSeen atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Process-ID") == "slow" && !slowSeen.Swap(true) {
			time.Sleep(3 * time.Second) // past the edge's timeout, once
		}
		b.record(r)
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	q := openQueue(t, t.TempDir(), 1)
	recs := []*buffer.Record{testRecord("slow", 1, "slow/0")}
	recs = append(recs, pipeRecords(7, 1)...)
	appendRecs(t, q, recs...)
	startEngine(t, q, 1, srv, func(o *Options) {
		o.Pipeline = 8
		o.MaxInFlight = 8
		o.Timeout = time.Second // far above a fast answer, even on a loaded machine
		o.MaxAttempts = 2
	})
	waitFor(t, "queue drained", queueEmpty(q))
	noDeadLetters(t, q)
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range recs[1:] {
		for _, a := range b.attempts[r.ID] {
			if a != "1" {
				t.Errorf("%s: X-Edge-Attempt %s seen (attempts %v): the slow head's timeout counted against it", r.ID, a, b.attempts[r.ID])
			}
		}
	}
}
