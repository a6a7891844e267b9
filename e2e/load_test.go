package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// The load: vegeta sends POST /api/v1/processes/{pid}/events through the
// edge for many processes at once, but never two requests of one process
// at a time.
//
// Why one at a time: vegeta's workers send concurrently, so two requests
// of one process in flight together reach the edge in no defined order,
// and "the order the edge accepted them" could only be recovered from the
// edge itself. Instead the targeter hands out process P's request n+1 only
// after request n got its final answer from the edge (or was given up).
// A success answer means the edge had the request on disk, so for every
// process the edge's acceptance order is exactly the client's sequence
// number, and the backend's event log must list a process's events in
// increasing sequence numbers. Volume comes from many processes: up to
// `workers` processes have a request in flight at once.
//
// A request that is not acknowledged is sent again, unchanged — the same
// body and the same Idempotency-Key (= X-Request-ID = the "rid" in the
// body) — 100 ms after a connection error (the edge is down), after a 503
// when its Retry-After says; at most maxTries times. Any other answer is
// final for the client. The edge dedupes a
// repeated Idempotency-Key at intake and the backend dedupes it at the
// effect, so a request whose first try was stored but not answered (the
// edge was killed between its fsync and its answer) still takes effect
// once.

// loadOptions bound one load.
type loadOptions struct {
	procs    []string // process ids
	perProc  int      // requests per process
	workers  int      // requests in flight at once (vegeta workers); default 64
	rate     int      // requests per second; 0 = as fast as the workers get answers
	maxTries int      // tries per request before it is given up; default 120
}

// request is one event of one process.
type request struct {
	seq        int
	rid        string // X-Request-ID, Idempotency-Key and the body's "rid"
	body       []byte
	tries      int
	acked      bool   // the edge answered 2xx
	deliveryID string // X-Delivery-ID of the acknowledgement
	lastCode   int    // the last answer's status (0: no answer)
}

// procLoad is the client side of one process.
type procLoad struct {
	pid  string
	url  string
	reqs []*request // every request created, in sequence order
	cur  *request   // the request being sent or waiting for a retry; nil between requests
}

// load is one run of the workload against one edge URL.
type load struct {
	opt   loadOptions
	procs []*procLoad
	byURL map[string]*procLoad
	ready chan *procLoad // processes whose next (or repeated) request may go now
	stop  chan struct{}  // closed: hand out nothing more
	done  chan struct{}  // closed when every answer has been processed

	stopOnce sync.Once
	attacker *vegeta.Attacker

	mu        sync.Mutex
	active    int         // processes not finished
	attempts  int         // HTTP requests sent
	acked     int         // requests acknowledged (2xx)
	codes     map[int]int // answers by status; 0 = connection error
	noRetryAt int         // 503 answers without Retry-After
	gaveUp    int         // requests given up after maxTries or a final non-2xx
	replayed  int         // answers marked Idempotent-Replayed: a repeat the edge, or the backend behind it, knew already
	lastErr   string      // the last connection error, for reports
}

// startLoad starts sending to base (the edge's public URL) and returns at
// once; stopLoad or the end of every process's requests ends it.
func startLoad(base string, opt loadOptions) *load {
	if opt.workers == 0 {
		opt.workers = 64
	}
	if opt.maxTries == 0 {
		opt.maxTries = 120
	}
	l := &load{opt: opt, byURL: map[string]*procLoad{}, ready: make(chan *procLoad, len(opt.procs)),
		stop: make(chan struct{}), done: make(chan struct{}), codes: map[int]int{}, active: len(opt.procs)}
	for _, pid := range opt.procs {
		p := &procLoad{pid: pid, url: base + "/api/v1/processes/" + pid + "/events"}
		l.procs = append(l.procs, p)
		l.byURL[p.url] = p
		l.ready <- p
	}
	l.attacker = vegeta.NewAttacker(
		vegeta.Workers(uint64(opt.workers)),
		vegeta.MaxWorkers(uint64(opt.workers)),
		vegeta.Connections(opt.workers),
		vegeta.KeepAlive(true),
		vegeta.Timeout(20*time.Second),
		vegeta.Redirects(vegeta.NoFollow),
		vegeta.MaxBody(4<<10),
	)
	// A bounded worker pool, each worker blocked in the targeter until a
	// process is free; rate 0 sends as fast as answers come back, a rate
	// spreads the load over a known time so that faults land in its middle.
	results := l.attacker.Attack(l.target, vegeta.Rate{Freq: opt.rate, Per: time.Second}, 0, "e2e")
	go func() {
		defer close(l.done)
		for res := range results {
			l.record(res)
		}
	}()
	if len(opt.procs) == 0 {
		l.stopNow()
	}
	return l
}

// target is the vegeta Targeter: the next request of a free process.
func (l *load) target(tgt *vegeta.Target) error {
	var p *procLoad
	select {
	case <-l.stop:
		return vegeta.ErrNoTargets
	case p = <-l.ready:
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if p.cur == nil {
		seq := len(p.reqs) + 1
		rid := uuid.NewString()
		body, _ := json.Marshal(map[string]any{"type": "e2e", "pid": p.pid, "seq": seq, "rid": rid})
		p.cur = &request{seq: seq, rid: rid, body: body}
		p.reqs = append(p.reqs, p.cur)
	}
	r := p.cur
	r.tries++
	l.attempts++
	*tgt = vegeta.Target{Method: http.MethodPost, URL: p.url, Body: r.body, Header: http.Header{
		"Content-Type":    {"application/json"},
		"Authorization":   {"Bearer " + bootstrapKey},
		"X-Process-Id":    {p.pid},
		"X-Request-Id":    {r.rid},
		"Idempotency-Key": {r.rid},
	}}
	return nil
}

// record books one answer and decides what the process does next.
func (l *load) record(res *vegeta.Result) {
	p := l.byURL[res.URL]
	if p == nil {
		return // the targeter's "no more targets": nothing was sent
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := p.cur
	code := int(res.Code)
	l.codes[code]++
	r.lastCode = code
	retryIn := time.Duration(-1) // < 0: this request is final
	switch {
	case code >= 200 && code < 300:
		r.acked = true
		r.deliveryID = res.Headers.Get("X-Delivery-ID")
		l.acked++
		if res.Headers.Get("Idempotent-Replayed") == "true" {
			l.replayed++
		}
	case code == 0: // no answer: the edge is down or was killed mid-request
		l.lastErr = res.Error
		retryIn = 100 * time.Millisecond
	case code == http.StatusServiceUnavailable:
		s, err := strconv.Atoi(res.Headers.Get("Retry-After"))
		if err != nil || s < 0 {
			l.noRetryAt++
			s = 1
		}
		retryIn = time.Duration(s) * time.Second
	default: // any other answer is final for the client (e.g. 502: dead-lettered)
	}
	if retryIn >= 0 && r.tries >= l.opt.maxTries {
		retryIn = -1
	}
	if retryIn < 0 {
		if !r.acked {
			l.gaveUp++
		}
		p.cur = nil
		if len(p.reqs) >= l.opt.perProc {
			l.active--
			if l.active == 0 {
				l.stopNow()
			}
			return
		}
		retryIn = 0
	}
	if retryIn == 0 {
		l.ready <- p // never blocks: each process is in the channel at most once
		return
	}
	time.AfterFunc(retryIn, func() { l.ready <- p })
}

// stopNow makes the targeter hand out nothing more.
func (l *load) stopNow() { l.stopOnce.Do(func() { close(l.stop) }) }

// stopAndWait stops the load and waits until every request in flight got
// its answer (or its client timeout).
func (l *load) stopAndWait() {
	l.stopNow()
	<-l.done
}

// finished reports whether the load has ended and every answer is booked.
func (l *load) finished() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *load) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}

func (l *load) code(c int) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.codes[c]
}

// stats is the client side's summary, read after the load is done.
type loadStats struct {
	sent, acked, attempts, gaveUp, noRetryAfter, replayed int
	codes                                                 map[int]int
	lastErr                                               string
}

func (l *load) stats() loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := loadStats{acked: l.acked, attempts: l.attempts, gaveUp: l.gaveUp, noRetryAfter: l.noRetryAt, replayed: l.replayed,
		codes: map[int]int{}, lastErr: l.lastErr}
	for _, p := range l.procs {
		st.sent += len(p.reqs)
	}
	for c, n := range l.codes {
		st.codes[c] = n
	}
	return st
}

func (st loadStats) String() string {
	return fmt.Sprintf("sent=%d acked=%d attempts=%d gave_up=%d codes=%v", st.sent, st.acked, st.attempts, st.gaveUp, st.codes)
}
