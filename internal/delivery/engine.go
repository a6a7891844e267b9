// Package delivery owns every buffered request from intake to its final
// outcome: it appends it to the durable queue (Submit), sends it to the
// backend that owns its partition, retries it, and records the outcome.
//
// Guarantees:
//   - Submit returns a ticket only once the record is durable (or a
//     duplicate/conflict of one that is). A record leaves the queue only
//     after its backend answered with a final status (2xx/3xx, a final 4xx,
//     501), it was dropped as rejected on a 429 relayed to a waiting client,
//     or it went to the dead letters (421 at once; retries exhausted by
//     MaxAttempts or MaxDuration).
//   - Ordering "key" (default): a record for key K is never sent before every
//     earlier record for K reached a final outcome or the dead letters;
//     different keys of one partition go concurrently up to MaxInFlight.
//     "partition": strict FIFO per partition. "none": no ordering.
//   - Failure isolation: a failed attempt backs off its own key (exponential
//     backoff, full jitter, capped Retry-After); other keys of the partition
//     go on. A partition waits without burning attempts while its backend
//     fails its readiness probe or its breaker is open; the breaker opens
//     only on evidence that the backend is down (see gate). A partition is
//     never re-routed to another backend.
//   - Protocol "batch" sends up to BatchMax records of distinct keys in one
//     multipart/mixed request (see batch.go), with the same outcome rules per
//     record; a backend that answers 404/405/415 to a batch is sent single
//     requests from then on. A partition sends its next batch when the one
//     in flight answers, or batchStagger after it went, or at once when it
//     is full and MaxInFlight has room for it (up to 4 in flight).
//   - Pipeline N > 1 (request mode, http:// backends) sends up to N records
//     of distinct keys pipelined on a worker's connection (conn.go), with the
//     same outcome rules per record; each answer has its own deadline, and
//     requests behind an answer that ended the connection or failed are
//     sent again without counting an attempt.
//   - On Stop, no new attempt starts; attempts under way may finish within
//     the grace period; everything else stays in the queue.
//
// One goroutine per partition (loop.go) owns that partition's in-memory
// state: the window of records read from the queue, which are in flight,
// which wait for their next attempt and which keys are parked. MaxInFlight
// worker goroutines per partition send the jobs the loop hands them, each
// over its own HTTP/1.1 keep-alive connection (conn.go; net/http for h2c),
// and settle each record's outcome (send.go); the retry policy is a pair of
// pure functions (policy.go).
package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
	"github.com/flowedge/flowedge/internal/metrics"
)

// Orderings, dead-letter policies and protocols.
const (
	OrderKey          = "key"
	OrderPartition    = "partition"
	OrderNone         = "none"
	OnDeadSkip        = "skip"
	OnDeadPark        = "park"
	ProtocolRequest   = "request"
	ProtocolBatch     = "batch"
	DefaultBatchPath  = "/_edge/batch"
	maxConcurrentJobs = 4 // batches in flight per partition (protocol "batch")
	// batchStagger: while a batch is in flight, the partition's next batch
	// waits for its answer or, at most, until the last batch has been out
	// this long. The records that arrive meanwhile go together, so a busy
	// partition sends one large batch per round trip instead of several
	// small ones (a backend's work per record falls steeply with the batch
	// size: docs/benchmarks.md), and a slow or hung batch holds back the
	// rest of the partition for no longer than this.
	batchStagger = 25 * time.Millisecond
)

// Errors of Submit. Callers test them with errors.Is.
var (
	// ErrFull: the queue is full (and when_full = "block" waited in vain).
	ErrFull = buffer.ErrFull
	// ErrConflict: the Idempotency-Key was used in the same scope with a
	// different request body.
	ErrConflict = errors.New("delivery: idempotency key reused with a different request")
)

// Options configure an Engine. Zero values mean the defaults in comments.
type Options struct {
	Queue      buffer.Queue       // required
	Partitions int                // required, >= 1
	BackendURL func(p int) string // base URL of partition p's backend; required

	Ordering    string // key (default) | partition | none
	MaxInFlight int    // records in flight per partition; 0 = 64
	OnDead      string // skip (default) | park

	Protocol   string // request (default) | batch
	BatchPath  string // "" = /_edge/batch
	BatchMax   int    // records per batch; 0 = 64
	BatchBytes int    // encoded size of a batch; 0 = 1 MiB
	H2C        bool   // request mode over cleartext HTTP/2 (net/http); false = each worker's own HTTP/1.1 connection
	// Pipeline is how many records a worker sends at once over its own
	// HTTP/1.1 connection (request mode to an http:// backend; ignored with
	// H2C, https and the batch protocol): all requests in one write, the
	// answers read in order. 0 or 1 = one request at a time.
	Pipeline int

	Timeout         time.Duration // per attempt; 0 = 10s
	ProbePath       string        // readiness path; "" = no probing, always ready
	ProbeInterval   time.Duration // 0 = 2s
	BreakerFailures int           // evidence that opens the breaker (see gate); 0 = 5
	BreakerCooldown time.Duration // 0 = 1m

	InitialBackoff time.Duration // 0 = 100ms
	MaxBackoff     time.Duration // 0 = 30s
	MaxRetryAfter  time.Duration // cap on a backend's Retry-After; 0 = MaxBackoff
	MaxDuration    time.Duration // give up (dead letter) after this age; 0 = 24h
	MaxAttempts    int           // give up after this many attempts; 0 = unlimited

	// BlockWhenFull makes Submit wait up to BlockTimeout (0 = 5s) for room
	// when the queue is full; false answers ErrFull at once.
	BlockWhenFull bool
	BlockTimeout  time.Duration

	// MaxResponseBody bounds the backend answer kept for relaying; a longer
	// body is cut there (and X-Edge-Truncated: true is set). 0 = 10 MiB.
	MaxResponseBody int64
	// Window bounds the records a partition holds in memory ahead of
	// delivery (records of a key that backs off count); 0 =
	// max(16·MaxInFlight, 1024). WindowBytes bounds their bodies; 0 = 32 MiB.
	Window      int
	WindowBytes int

	Metrics *metrics.Edge // nil = none
	Logger  *slog.Logger  // nil = discard
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Ordering == "" {
		o.Ordering = OrderKey
	}
	if o.OnDead == "" {
		o.OnDead = OnDeadSkip
	}
	if o.Protocol == "" {
		o.Protocol = ProtocolRequest
	}
	if o.BatchPath == "" {
		o.BatchPath = DefaultBatchPath
	}
	if o.BatchMax <= 0 {
		o.BatchMax = 64
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 1 << 20
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 64
	}
	if o.Ordering == OrderPartition {
		o.MaxInFlight = 1
	}
	def(&o.Timeout, 10*time.Second)
	def(&o.ProbeInterval, 2*time.Second)
	if o.BreakerFailures <= 0 {
		o.BreakerFailures = 5
	}
	def(&o.BreakerCooldown, time.Minute)
	def(&o.InitialBackoff, 100*time.Millisecond)
	def(&o.MaxBackoff, 30*time.Second)
	def(&o.MaxRetryAfter, o.MaxBackoff)
	def(&o.MaxDuration, 24*time.Hour)
	def(&o.BlockTimeout, 5*time.Second)
	if o.MaxResponseBody <= 0 {
		o.MaxResponseBody = 10 << 20
	}
	if o.Window <= 0 {
		o.Window = max(16*o.MaxInFlight, 1024)
	}
	if o.WindowBytes <= 0 {
		o.WindowBytes = 32 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Result is a delivery's final result, as handed to a waiting ticket.
type Result struct {
	ID         string
	Status     buffer.Status // delivered, rejected or dead
	StatusCode int           // the backend's status; 0 if none
	Header     http.Header   // the backend's headers, hop-by-hop removed
	Body       []byte
	Reason     string // why it is dead
	// Unsure, when set, replaces the backend's answer: the outcome could
	// not be stored, so whether the record is still queued is unknown.
	Unsure error
}

// Engine delivers the queue's records. Create it with New, run it with
// Start, end it with Stop.
type Engine struct {
	opt    Options
	q      buffer.Queue
	log    *slog.Logger
	pol    policy
	loops  []*loop
	client *http.Client // request mode; its pool is sized to the concurrency
	batchC *http.Client // batch mode (HTTP/1.1)

	waitMu  sync.Mutex
	waiters map[string][]*Ticket

	stopCtx   context.Context // cancelled by Stop: no new attempts
	stopNow   context.CancelFunc
	stopping  <-chan struct{} // stopCtx.Done()
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	started   atomic.Bool
	stopOnce  sync.Once
	probeHTTP *http.Client
	// batchRefused: a partition's backend refused a batch envelope with a
	// 4xx other than 404/405/408/413/415/429 (logged once per engine).
	batchRefused atomic.Bool

	// netHTTP makes request mode use the shared net/http client instead of
	// each worker's own connection (benchmarks compare the two).
	netHTTP bool
}

// New checks opt and builds an Engine; nothing runs until Start.
func New(opt Options) (*Engine, error) {
	if opt.Queue == nil || opt.BackendURL == nil || opt.Partitions < 1 {
		return nil, errors.New("delivery: Queue, BackendURL and Partitions >= 1 are required")
	}
	switch opt.Ordering {
	case "", OrderKey, OrderPartition, OrderNone:
	default:
		return nil, fmt.Errorf("delivery: unknown ordering %q", opt.Ordering)
	}
	switch opt.OnDead {
	case "", OnDeadSkip, OnDeadPark:
	default:
		return nil, fmt.Errorf("delivery: unknown on_dead %q", opt.OnDead)
	}
	switch opt.Protocol {
	case "", ProtocolRequest, ProtocolBatch:
	default:
		return nil, fmt.Errorf("delivery: unknown protocol %q", opt.Protocol)
	}
	opt.setDefaults()
	e := &Engine{
		opt:     opt,
		q:       opt.Queue,
		log:     opt.Logger,
		waiters: make(map[string][]*Ticket),
		pol: policy{initial: opt.InitialBackoff, max: opt.MaxBackoff, maxRetryAfter: opt.MaxRetryAfter,
			maxDuration: opt.MaxDuration, maxAttempts: opt.MaxAttempts},
		probeHTTP: &http.Client{
			Timeout:   min(opt.Timeout, opt.ProbeInterval),
			Transport: newTransport(2*opt.Partitions, opt.Timeout),
		},
	}
	conns := opt.MaxInFlight * opt.Partitions
	e.client = &http.Client{
		Timeout: opt.Timeout,
		// A backend's redirect is its answer: relay it, do not follow it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	tr := newTransport(conns, opt.Timeout)
	if opt.H2C {
		// Cleartext HTTP/2 with prior knowledge (net/http's own h2c since
		// Go 1.24): many streams over few connections.
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	e.client.Transport = tr
	e.batchC = &http.Client{Timeout: opt.Timeout, Transport: newTransport(maxConcurrentJobs*opt.Partitions, opt.Timeout),
		CheckRedirect: e.client.CheckRedirect}
	e.stopCtx, e.stopNow = context.WithCancel(context.Background())
	e.stopping = e.stopCtx.Done()
	for p := range opt.Partitions {
		e.loops = append(e.loops, newLoop(e, p))
	}
	return e, nil
}

// newTransport sizes the idle pool to the concurrency: Go's default of 2 idle
// connections per host makes a busy proxy open thousands of connections.
func newTransport(conns int, timeout time.Duration) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: min(timeout, 5*time.Second), KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          conns + 16,
		MaxIdleConnsPerHost:   conns + 16,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
		WriteBufferSize:       32 << 10,
		ReadBufferSize:        32 << 10,
	}
}

// Start runs the partition loops, their workers and the readiness probes
// until Stop. ctx carries values only; use Stop to end the engine.
func (e *Engine) Start(ctx context.Context) {
	if !e.started.CompareAndSwap(false, true) {
		return
	}
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for p, l := range e.loops {
		if e.opt.ProbePath != "" {
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				probeLoop(e.ctx, e.stopping, e.probeHTTP, e.opt.BackendURL(p)+e.opt.ProbePath, e.opt.ProbeInterval,
					Claim{Partition: p, Count: e.opt.Partitions}, l.gate)
			}()
		}
		l.start(e.ctx)
	}
}

// Stop stops dispatching, lets attempts under way finish for up to grace,
// then cancels the rest (they stay queued) and waits for every goroutine.
// Safe to call twice.
func (e *Engine) Stop(grace time.Duration) {
	e.stopOnce.Do(func() {
		e.stopNow()
		if !e.started.Load() {
			return
		}
		done := make(chan struct{})
		go func() { e.wg.Wait(); close(done) }()
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
		}
		e.cancel()
		<-done
		e.client.CloseIdleConnections()
		e.batchC.CloseIdleConnections()
		e.probeHTTP.CloseIdleConnections()
	})
}

// Ticket is the engine's receipt for a submitted request. A ticket that
// waits for the outcome must be ended with Wait or Release.
type Ticket struct {
	// ID is the delivery id: the record's, or for a Duplicate the first
	// record's.
	ID string
	// Duplicate is true when the request repeats one appended before under
	// the same idempotency scope: nothing was stored.
	Duplicate bool

	e      *Engine
	ch     chan Result   // buffered 1; receives the result once
	queued bool          // registered in e.waiters
	held   chan struct{} // under e.waitMu: set by hold, closed by settle
}

// Submit stores rec durably (waiting for room when the queue is full and
// Options.BlockWhenFull) and returns its ticket: the ticket can wait for the
// outcome. A repeat under the same idempotency scope returns the first
// record's ticket (Duplicate); a repeat with a different body ErrConflict.
// Errors: ErrFull, ErrConflict, the queue's write errors, ctx's error.
func (e *Engine) Submit(ctx context.Context, rec *buffer.Record) (*Ticket, error) {
	if rec.Partition < 0 || rec.Partition >= len(e.loops) {
		return nil, fmt.Errorf("delivery: submit %s: partition %d out of range", rec.ID, rec.Partition)
	}
	t := e.watch(rec.ID)
	res, err := e.appendOne(ctx, rec)
	if err != nil {
		t.Release()
		return nil, err
	}
	if res.Conflict {
		t.Release()
		return nil, fmt.Errorf("submit %s (first %s): %w", rec.ID, res.ID, ErrConflict)
	}
	if !res.Duplicate {
		return t, nil
	}
	// Seen before: follow the first delivery instead.
	t.Release()
	t = e.watch(res.ID)
	t.Duplicate = true
	if r, ok := e.finalResult(res.ID); ok {
		e.publish(r)
	}
	return t, nil
}

// appendOne appends rec, waiting for room when the queue is full and
// BlockWhenFull is set.
func (e *Engine) appendOne(ctx context.Context, rec *buffer.Record) (buffer.AppendResult, error) {
	var deadline <-chan time.Time
	for {
		freed := e.q.Freed()
		res, err := e.q.Append(ctx, []*buffer.Record{rec})
		if err == nil {
			return res[0], nil
		}
		if !errors.Is(err, buffer.ErrFull) || !e.opt.BlockWhenFull {
			return buffer.AppendResult{}, err
		}
		if deadline == nil {
			t := time.NewTimer(e.opt.BlockTimeout)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-freed:
		case <-deadline:
			return buffer.AppendResult{}, err
		case <-ctx.Done():
			return buffer.AppendResult{}, ctx.Err()
		}
	}
}

// watch registers a ticket waiting for id's result.
func (e *Engine) watch(id string) *Ticket {
	t := &Ticket{ID: id, e: e, ch: make(chan Result, 1), queued: true}
	e.waitMu.Lock()
	e.waiters[id] = append(e.waiters[id], t)
	e.waitMu.Unlock()
	return t
}

// Wait waits for the delivery's final result until ctx ends. ok is false
// when ctx ended first; the ticket is released either way. A result that
// came in while the ticket was being released is still returned, so a
// waiter is never told "queued" about a request that was dropped.
func (t *Ticket) Wait(ctx context.Context) (Result, bool) {
	select {
	case r := <-t.ch:
		return r, true
	case <-ctx.Done():
		return t.Release()
	}
}

// Release stops waiting. If the result had already been handed to this
// ticket it is returned (ok true). Safe to call twice.
func (t *Ticket) Release() (Result, bool) {
	if t == nil || t.e == nil {
		return Result{}, false
	}
	e := t.e
	e.waitMu.Lock()
	for t.held != nil {
		// A result is being stored for this ticket: it comes within
		// bookkeepTimeout.
		held := t.held
		e.waitMu.Unlock()
		<-held
		e.waitMu.Lock()
	}
	if t.queued {
		t.queued = false
		list := e.waiters[t.ID]
		for i, c := range list {
			if c == t {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(e.waiters, t.ID)
		} else {
			e.waiters[t.ID] = list
		}
	}
	e.waitMu.Unlock()
	select {
	case r := <-t.ch:
		return r, true
	default:
		return Result{}, false
	}
}

// publish hands r to every ticket waiting for it.
func (e *Engine) publish(r Result) {
	e.waitMu.Lock()
	list := e.waiters[r.ID]
	delete(e.waiters, r.ID)
	for _, t := range list {
		t.queued = false
		t.ch <- r // buffered, one result per ticket
	}
	e.waitMu.Unlock()
}

// hold takes id's waiting tickets for a result that must be durable before
// their clients hear it: until settle, none of them can give up waiting
// (Release waits for it). Nil when no ticket waits.
func (e *Engine) hold(id string) []*Ticket {
	e.waitMu.Lock()
	defer e.waitMu.Unlock()
	list := e.waiters[id]
	if len(list) == 0 {
		return nil
	}
	delete(e.waiters, id)
	for _, t := range list {
		t.queued = false
		t.held = make(chan struct{})
	}
	return list
}

// settle ends a hold: it hands r to the held tickets and to any that came
// to wait meanwhile (repeats of the request).
func (e *Engine) settle(held []*Ticket, r Result) {
	e.waitMu.Lock()
	defer e.waitMu.Unlock()
	for _, t := range e.waiters[r.ID] {
		t.queued = false
		t.ch <- r
	}
	delete(e.waiters, r.ID)
	for _, t := range held {
		t.ch <- r // buffered, one result per ticket
		close(t.held)
		t.held = nil
	}
}

// finalResult returns id's result if it is final already.
func (e *Engine) finalResult(id string) (Result, bool) {
	for _, l := range e.loops {
		if o, ok := l.final(id); ok {
			return resultOf(o), true
		}
	}
	d, err := e.q.Lookup(id)
	if err != nil || d.Outcome == nil {
		return Result{}, false
	}
	return resultOf(d.Outcome), true
}

func resultOf(o *buffer.Outcome) Result {
	return Result{ID: o.ID, Status: o.Status, StatusCode: o.ResponseStatus,
		Header: o.ResponseHeader, Body: o.ResponseBody, Reason: o.LastError}
}

// Replay moves dead letter id back into its partition's queue at its
// original place, lifts its key's park and hands it to the partition's loop.
//
// A ctx already done does nothing; once begun, the replay is not cut short
// by ctx (bounded by bookkeepTimeout): a queue write abandoned half-way may
// still commit, and a record put back that the partition's loop never
// hears of stays stuck until a restart.
func (e *Engine) Replay(ctx context.Context, id string) (*buffer.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("replay %s: %w", id, err)
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepTimeout)
	defer cancel()
	rec, err := e.q.Replay(bctx, id)
	if err != nil {
		return nil, fmt.Errorf("replay %s: %w", id, err)
	}
	if rec.Partition >= 0 && rec.Partition < len(e.loops) {
		e.loops[rec.Partition].send(e.loops[rec.Partition].replays, rec)
	}
	return rec, nil
}

// Discard deletes dead letter id and lifts its key's park. Like Replay, it
// is not cut short by ctx once begun.
func (e *Engine) Discard(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("discard %s: %w", id, err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bookkeepTimeout)
	defer cancel()
	d, err := e.q.Lookup(id)
	if err != nil {
		return fmt.Errorf("discard %s: %w", id, err)
	}
	if d.Status != buffer.StatusDead {
		return fmt.Errorf("discard %s: %w", id, buffer.ErrNotFound)
	}
	if err := e.q.Discard(ctx, id); err != nil {
		return fmt.Errorf("discard %s: %w", id, err)
	}
	var p int
	var key string
	switch {
	case d.Record != nil:
		p, key = d.Record.Partition, d.Record.Key
	case d.Outcome != nil:
		p, key = d.Outcome.Partition, d.Outcome.Key
	default:
		return nil
	}
	if p >= 0 && p < len(e.loops) {
		l := e.loops[p]
		l.send(l.unparks, &buffer.Record{ID: id, Key: key})
	}
	return nil
}

// DeadLetters lists dead letters (see buffer.Queue.DeadLetters).
func (e *Engine) DeadLetters(p int, cursor string, limit int) ([]buffer.DeadLetter, string, error) {
	return e.q.DeadLetters(p, cursor, limit)
}

// View is a delivery as /edge/v1/deliveries/{id} shows it.
type View struct {
	ID             string        `json:"id"`
	Partition      int           `json:"partition"`
	Key            string        `json:"key"`
	Status         buffer.Status `json:"status"`
	Attempts       int           `json:"attempts"`
	NextAttemptAt  *time.Time    `json:"next_attempt_at"`
	LastError      string        `json:"last_error"`
	ResponseStatus int           `json:"response_status"`
	ReceivedAt     time.Time     `json:"received_at"`
	FinishedAt     *time.Time    `json:"finished_at"`
}

// Lookup tells where delivery id stands: held by a partition (queued, in
// flight, waiting for its next attempt), or from the queue (queued, final,
// dead). buffer.ErrNotFound when unknown or expired.
func (e *Engine) Lookup(id string) (View, error) {
	for _, l := range e.loops {
		if v, ok := l.view(id); ok {
			return v, nil
		}
	}
	d, err := e.q.Lookup(id)
	if err != nil {
		return View{}, err
	}
	view := View{ID: id, Status: d.Status}
	if r := d.Record; r != nil {
		view.Partition, view.Key, view.Attempts, view.LastError, view.ReceivedAt = r.Partition, r.Key, r.Attempts, r.LastError, r.ReceivedAt
		if !r.NextAttemptAt.IsZero() {
			t := r.NextAttemptAt
			view.NextAttemptAt = &t
		}
	}
	if o := d.Outcome; o != nil {
		view.Partition, view.Key, view.Attempts, view.ReceivedAt = o.Partition, o.Key, o.Attempts, o.ReceivedAt
		view.ResponseStatus, view.LastError = o.ResponseStatus, o.LastError
		if !o.FinishedAt.IsZero() {
			t := o.FinishedAt
			view.FinishedAt = &t
		}
	}
	return view, nil
}

// PartitionView is a partition as /edge/v1/partitions shows it.
type PartitionView struct {
	Partition int    `json:"partition"`
	Backend   string `json:"backend"`
	Ready     bool   `json:"ready"` // probe passes and the backend's claim agrees
	// Misconfigured: the backend's readiness answer claims another
	// partition or count (X-Partition) than the edge maps it to; nothing
	// is delivered to it. Claim is that header while so, "" otherwise.
	Misconfigured    bool    `json:"misconfigured"`
	Claim            string  `json:"claim,omitempty"`
	Breaker          string  `json:"breaker"`
	Protocol         string  `json:"protocol"`
	Queued           int     `json:"queued"`
	InFlight         int     `json:"in_flight"`
	Waiting          int     `json:"waiting"` // records backing off (their keys wait)
	ParkedKeys       int     `json:"parked_keys"`
	DeadLetters      int     `json:"dead_letters"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// Partitions describes every partition.
func (e *Engine) Partitions() []PartitionView {
	st := e.q.Stats()
	out := make([]PartitionView, len(e.loops))
	now := time.Now()
	for p, l := range e.loops {
		ready, br := l.gate.snapshot()
		claim := l.gate.misclaim()
		v := PartitionView{Partition: p, Backend: e.opt.BackendURL(p), Ready: ready && claim == "", Misconfigured: claim != "", Claim: claim,
			Breaker: br, Protocol: l.protocol()}
		v.InFlight, v.Waiting, v.ParkedKeys = l.counts()
		if p < len(st.Partitions) {
			ps := st.Partitions[p]
			v.Queued, v.DeadLetters = ps.Records, ps.DeadLetters
			if !ps.Oldest.IsZero() {
				v.OldestAgeSeconds = now.Sub(ps.Oldest).Seconds()
			}
		}
		out[p] = v
	}
	return out
}

// State is the scrape-time view for the metrics package.
func (e *Engine) State() metrics.State {
	st := e.q.Stats()
	s := metrics.State{BufferBytes: st.Bytes, DiskBytes: st.DiskBytes, Partitions: make([]metrics.PartitionState, len(e.loops))}
	for p, l := range e.loops {
		ready, br := l.gate.snapshot()
		ps := metrics.PartitionState{Ready: ready, BreakerOpen: br == BreakerOpen}
		if p < len(st.Partitions) {
			ps.Records, ps.Oldest, ps.DeadLetters = st.Partitions[p].Records, st.Partitions[p].Oldest, st.Partitions[p].DeadLetters
		}
		s.Partitions[p] = ps
	}
	return s
}

// ReadyPartitions reports how many partitions can deliver (used by health).
func (e *Engine) ReadyPartitions() (ready, total int) {
	for _, l := range e.loops {
		if r, br := l.gate.snapshot(); r && br != BreakerOpen {
			ready++
		}
	}
	return ready, len(e.loops)
}

// Misconfigured describes each partition whose backend claims another
// partition or count than the edge maps it to (see PartitionView); nil
// when none does.
func (e *Engine) Misconfigured() []string {
	var out []string
	for p, l := range e.loops {
		if c := l.gate.misclaim(); c != "" {
			out = append(out, fmt.Sprintf("partition %d: %s claims %s, the edge maps it to %s",
				p, e.opt.BackendURL(p), c, Claim{Partition: p, Count: len(e.loops)}))
		}
	}
	return out
}

// PartitionReady reports whether partition p's backend is ready and its
// breaker not open, and the breaker state.
func (e *Engine) PartitionReady(p int) (bool, string) {
	if p < 0 || p >= len(e.loops) {
		return false, BreakerClosed
	}
	ready, br := e.loops[p].gate.snapshot()
	return ready && br != BreakerOpen, br
}

// Err is the queue's last write error (the health endpoints report it;
// liveness fails on one wrapping buffer.ErrSyncFailed).
func (e *Engine) Err() error { return e.q.Err() }
