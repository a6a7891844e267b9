// Package delivery sends buffered requests to the backend that owns their
// partition, and keeps doing so until each reaches a final outcome.
//
// Guarantees:
//   - A record leaves the queue only after its backend answered with a final
//     status (2xx/3xx, a final 4xx, 501) or it went to the dead letters
//     (421 at once; retries exhausted by max_attempts or max_duration).
//   - Ordering "key" (default): a record for key K is never sent before every
//     earlier record for K reached a final outcome or the dead letters;
//     different keys of one partition go concurrently up to MaxInFlight.
//     "partition": strict FIFO per partition. "none": no ordering.
//   - Retries use exponential backoff with full jitter and honour a capped
//     Retry-After. A partition whose backend fails its readiness probe, or
//     whose breaker is open, waits without burning attempts. A partition is
//     never re-routed to another backend.
//   - On Stop, no new attempt starts; attempts under way may finish within
//     the grace period; everything else is handed back to the queue, which
//     still holds it.
//
// One goroutine per partition owns that partition's in-memory window (see
// loop.go); each dispatched record gets a worker goroutine that runs its
// attempts through go-retryablehttp (attempt.go).
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

// Orderings and dead-letter policies.
const (
	OrderKey       = "key"
	OrderPartition = "partition"
	OrderNone      = "none"
	OnDeadSkip     = "skip"
	OnDeadPark     = "park"
)

// Options configure an Engine. Zero values mean the defaults in comments.
type Options struct {
	Queue      buffer.Queue       // required
	Partitions int                // required, >= 1
	BackendURL func(p int) string // base URL of partition p's backend; required

	Ordering    string // key (default) | partition | none
	MaxInFlight int    // per partition; 0 = 64
	OnDead      string // skip (default) | park

	Timeout         time.Duration // per attempt; 0 = 10s
	ProbePath       string        // readiness path; "" = no probing, always ready
	ProbeInterval   time.Duration // 0 = 2s
	BreakerFailures int           // consecutive failures that open the breaker; 0 = 5
	BreakerCooldown time.Duration // 0 = 1m

	InitialBackoff time.Duration // 0 = 100ms
	MaxBackoff     time.Duration // 0 = 30s
	MaxRetryAfter  time.Duration // cap on a backend's Retry-After; 0 = MaxBackoff
	MaxDuration    time.Duration // give up (dead letter) after this age; 0 = 24h
	MaxAttempts    int           // give up after this many attempts; 0 = unlimited

	// MaxResponseBody bounds the backend answer kept for relaying; a longer
	// body is cut there (and X-Edge-Truncated: true is set). 0 = 10 MiB.
	MaxResponseBody int64
	// Window bounds the records a partition holds in memory ahead of
	// delivery; 0 = max(4·MaxInFlight, 256). WindowBytes bounds their
	// bodies; 0 = 32 MiB.
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
	if o.MaxResponseBody <= 0 {
		o.MaxResponseBody = 10 << 20
	}
	if o.Window <= 0 {
		o.Window = max(4*o.MaxInFlight, 256)
	}
	if o.WindowBytes <= 0 {
		o.WindowBytes = 32 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Result is a delivery's final result, as handed to a relay waiter.
type Result struct {
	ID         string
	Status     buffer.Status // delivered, rejected or dead
	StatusCode int           // the backend's status; 0 if none
	Header     http.Header   // the backend's headers, hop-by-hop removed
	Body       []byte
	Reason     string // why it is dead
}

// Engine delivers the queue's records. Create it with New, run it with
// Start, end it with Stop.
type Engine struct {
	opt     Options
	q       buffer.Queue
	log     *slog.Logger
	loops   []*loop
	gates   []*gate
	clients []*http.Client // one per partition, so a give-up's CloseIdleConnections stays local

	waitMu  sync.Mutex
	waiters map[string][]chan Result

	live sync.Map // id → *liveState, records a worker holds

	stopCtx   context.Context // cancelled by Stop: no new attempts
	stopNow   context.CancelFunc
	stopping  <-chan struct{} // stopCtx.Done()
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	started   atomic.Bool
	stopOnce  sync.Once
	probeHTTP *http.Client
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
	opt.setDefaults()
	e := &Engine{
		opt:     opt,
		q:       opt.Queue,
		log:     opt.Logger,
		waiters: make(map[string][]chan Result),
		probeHTTP: &http.Client{
			Timeout:   min(opt.Timeout, opt.ProbeInterval),
			Transport: newTransport(2, opt.Timeout),
		},
	}
	e.stopCtx, e.stopNow = context.WithCancel(context.Background())
	e.stopping = e.stopCtx.Done()
	for p := range opt.Partitions {
		e.gates = append(e.gates, newGate(opt.BreakerFailures, opt.BreakerCooldown, opt.ProbePath == ""))
		e.clients = append(e.clients, &http.Client{
			Timeout:   opt.Timeout,
			Transport: newTransport(opt.MaxInFlight, opt.Timeout),
			// A backend's redirect is its answer: relay it, do not follow it.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		})
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
	}
}

// Start runs the partition loops and readiness probes until Stop. ctx
// carries values only; use Stop to end the engine.
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
				probeLoop(e.ctx, e.stopping, e.probeHTTP, e.opt.BackendURL(p)+e.opt.ProbePath, e.opt.ProbeInterval, e.gates[p])
			}()
		}
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			l.run(e.ctx)
		}()
	}
}

// Stop stops dispatching, lets attempts under way finish for up to grace,
// then cancels the rest (handed back: they stay queued) and waits for every
// goroutine. Safe to call twice.
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
		for _, c := range e.clients {
			c.CloseIdleConnections()
		}
		e.probeHTTP.CloseIdleConnections()
	})
}

// Wait registers interest in delivery id's final result before the record is
// appended. The channel receives at most one Result; call cancel when no
// longer waiting.
func (e *Engine) Wait(id string) (<-chan Result, func()) {
	ch := make(chan Result, 1)
	e.waitMu.Lock()
	e.waiters[id] = append(e.waiters[id], ch)
	e.waitMu.Unlock()
	return ch, func() {
		e.waitMu.Lock()
		defer e.waitMu.Unlock()
		list := e.waiters[id]
		for i, c := range list {
			if c == ch {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(e.waiters, id)
		} else {
			e.waiters[id] = list
		}
	}
}

func (e *Engine) publish(r Result) {
	e.waitMu.Lock()
	list := e.waiters[r.ID]
	delete(e.waiters, r.ID)
	e.waitMu.Unlock()
	for _, ch := range list {
		ch <- r // buffered, one result per channel
	}
}

// Replay moves dead letter id back into its partition's queue at its
// original place and lifts its key's park.
func (e *Engine) Replay(ctx context.Context, id string) (*buffer.Record, error) {
	rec, err := e.q.Replay(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("replay %s: %w", id, err)
	}
	if rec.Partition >= 0 && rec.Partition < len(e.loops) {
		e.loops[rec.Partition].inject(ctx, rec)
	}
	return rec, nil
}

// Discard deletes dead letter id and lifts its key's park.
func (e *Engine) Discard(ctx context.Context, id string) error {
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
		e.loops[p].unpark(ctx, key, id)
	}
	return nil
}

// liveState is what a worker knows of the record it holds.
type liveState struct {
	mu        sync.Mutex
	rec       *buffer.Record
	attempts  int
	nextAt    time.Time
	lastError string
	inAttempt bool
	final     *buffer.Outcome // set once the outcome is known, before it is acked
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

// Lookup tells where delivery id stands: in flight (a worker holds it),
// queued, or final. buffer.ErrNotFound when unknown or expired.
func (e *Engine) Lookup(id string) (View, error) {
	if v, ok := e.live.Load(id); ok {
		s := v.(*liveState)
		s.mu.Lock()
		defer s.mu.Unlock()
		view := View{ID: id, Partition: s.rec.Partition, Key: s.rec.Key, Status: buffer.StatusQueued,
			Attempts: s.attempts, LastError: s.lastError, ReceivedAt: s.rec.ReceivedAt}
		if o := s.final; o != nil {
			t := o.FinishedAt
			view.Status, view.ResponseStatus, view.FinishedAt = o.Status, o.ResponseStatus, &t
			return view, nil
		}
		if s.inAttempt {
			view.Status = buffer.StatusInFlight
		} else if !s.nextAt.IsZero() {
			t := s.nextAt
			view.NextAttemptAt = &t
		}
		return view, nil
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
	Partition        int     `json:"partition"`
	Backend          string  `json:"backend"`
	Ready            bool    `json:"ready"`
	Breaker          string  `json:"breaker"`
	Queued           int     `json:"queued"`
	InFlight         int     `json:"in_flight"`
	DeadLetters      int     `json:"dead_letters"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// Partitions describes every partition.
func (e *Engine) Partitions() []PartitionView {
	st := e.q.Stats()
	out := make([]PartitionView, len(e.loops))
	now := time.Now()
	for p := range e.loops {
		ready, br := e.gates[p].snapshot()
		v := PartitionView{Partition: p, Backend: e.opt.BackendURL(p), Ready: ready, Breaker: br,
			InFlight: int(e.loops[p].inFlight.Load())}
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
	s := metrics.State{BufferBytes: st.Bytes, DiskBytes: st.DiskBytes, Partitions: make([]metrics.PartitionState, len(e.gates))}
	for p, g := range e.gates {
		ready, br := g.snapshot()
		ps := metrics.PartitionState{Ready: ready, BreakerOpen: br == BreakerOpen}
		if p < len(st.Partitions) {
			ps.Records, ps.Oldest, ps.DeadLetters = st.Partitions[p].Records, st.Partitions[p].Oldest, st.Partitions[p].DeadLetters
		}
		s.Partitions[p] = ps
	}
	return s
}

// Ready reports whether any partition can deliver (used by health).
func (e *Engine) ReadyPartitions() (ready, total int) {
	for _, g := range e.gates {
		if r, br := g.snapshot(); r && br != BreakerOpen {
			ready++
		}
	}
	return ready, len(e.gates)
}

// PartitionReady reports whether partition p's backend is ready and its
// breaker not open, and the breaker state.
func (e *Engine) PartitionReady(p int) (bool, string) {
	if p < 0 || p >= len(e.gates) {
		return false, BreakerClosed
	}
	ready, br := e.gates[p].snapshot()
	return ready && br != BreakerOpen, br
}

// Outcome returns delivery id's final outcome if it is known: from the
// worker that holds it (answered, ack under way) or from the queue.
func (e *Engine) Outcome(id string) (*buffer.Outcome, bool) {
	if v, ok := e.live.Load(id); ok {
		s := v.(*liveState)
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.final, s.final != nil
	}
	d, err := e.q.Lookup(id)
	if err != nil || d.Outcome == nil {
		return nil, false
	}
	return d.Outcome, true
}
