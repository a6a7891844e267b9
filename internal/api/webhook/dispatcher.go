package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/httpx"
	"github.com/flowedge/flowedge/internal/outbound"
	"github.com/hashicorp/go-retryablehttp"
	"github.com/prometheus/client_golang/prometheus"
)

// Options tunes webhook delivery and the per-host circuit breakers
// of outbound calls. The zero value of each field means the default named
// on it.
type Options struct {
	// Workers is how many deliveries are under way at once; 0 means 4.
	Workers int
	// QueueSize bounds the deliveries waiting for a worker; 0 means 1024.
	// When the queue is full a new delivery is dropped (result "dropped"),
	// never waited for: events never slow down the request or job that
	// raised them.
	QueueSize int
	// MaxQueueBytes bounds the bodies of the deliveries waiting for a
	// worker, counted once per delivery; 0 means 64 MiB. An event can be a
	// job with a 1 MiB input: without it a full queue could hold a
	// gigabyte. Past it new deliveries are dropped, as when the queue is
	// full.
	MaxQueueBytes int64
	// Timeout bounds each attempt (connect, TLS, request, answer); 0 means
	// 10s.
	Timeout time.Duration
	// MaxAttempts bounds the attempts of one delivery; 0 means 5.
	MaxAttempts int
	// RetryWaitMin and RetryWaitMax bound the wait before a retry:
	// exponential from RetryWaitMin with jitter, capped at RetryWaitMax,
	// Retry-After honoured up to RetryWaitMax. 0 means 1s and 30s.
	RetryWaitMin, RetryWaitMax time.Duration
	// InMemory keeps deliveries in memory only, without the journal the
	// API gives the dispatcher otherwise (Config.Journal): best-effort,
	// lost on a restart, dropped when the queue is full.
	InMemory bool
	// BreakerCooldown is how long a host's circuit breaker stays open
	// before one probe call may go through. It applies to webhook
	// deliveries and to workflow http steps. 0 means 1 minute.
	BreakerCooldown time.Duration
	// SharedReload is how often the webhook list is read again from a
	// store other backends share (they may add or delete webhooks); 0
	// means 10 s. Unused with an embedded store.
	SharedReload time.Duration
}

func (o Options) withDefaults() Options {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 1024
	}
	if o.MaxQueueBytes <= 0 {
		o.MaxQueueBytes = 64 << 20
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 5
	}
	def(&o.Timeout, 10*time.Second)
	def(&o.RetryWaitMin, time.Second)
	def(&o.RetryWaitMax, 30*time.Second)
	def(&o.BreakerCooldown, time.Minute)
	if o.RetryWaitMax < o.RetryWaitMin {
		o.RetryWaitMax = o.RetryWaitMin
	}
	return o
}

// Results of a delivery: the values of flow_webhook_deliveries_total{result}.
const (
	deliverySuccess     = "success"      // the receiver answered 2xx
	deliveryFailure     = "failure"      // a final non-2xx answer, an error after the last attempt, a refused address
	deliveryBreakerOpen = "breaker_open" // the target host's breaker was open: nothing (more) was sent
	deliveryDropped     = "dropped"      // the queue was full (deliveries or bytes), or the server stopped before it was delivered
)

var Results = []string{deliverySuccess, deliveryFailure, deliveryBreakerOpen, deliveryDropped}

// envelope is the body of every delivery.
type envelope struct {
	ID        string    `json:"id"` // the event's id: the same for every webhook it goes to
	Event     string    `json:"event"`
	CreatedAt time.Time `json:"created_at"`
	Data      any       `json:"data"`
}

// delivery is one event on its way to one webhook.
type delivery struct {
	id       string // X-Flow-Delivery
	hookID   string
	hook     store.WebhookRecord // read again from the store at delivery
	event    string
	body     []byte
	attempts int // touched only by the worker that has the delivery
}

type deliveryKey struct{}

// Dispatcher is the API's event sink: it fans each event out to the
// webhooks that subscribe to it and delivers them on a fixed pool of
// workers. With Config.Journal deliveries are durable (see Journal); without
// it they live in memory only: best-effort, lost on restart.
type Dispatcher struct {
	cfg    Config
	log    *slog.Logger
	o      Options
	client *retryablehttp.Client
	queue  chan *delivery
	queued atomic.Int64    // bytes of the bodies in queue
	ctx    context.Context // ends at stop: in-flight attempts and waits end with it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	reloadMu sync.Mutex // one reload at a time, so the last one installs the latest list
	mu       sync.RWMutex
	subs     []store.WebhookRecord

	// With a journal: the ids queued or under way, so the rescan does not
	// queue them twice; wake asks for a rescan.
	liveMu sync.Mutex
	live   map[string]bool
	wake   chan struct{}
	// behind is set when the journal may hold deliveries that are not in
	// memory (at start, after a full queue, after a delivery put off):
	// only then does the periodic rescan read the journal.
	behind atomic.Bool
}

// Config is what a Dispatcher needs. Store, Breakers and Deliveries are
// required; the zero value of the others means the default named on them.
type Config struct {
	// Store holds the webhooks.
	Store store.Store
	// Options tunes delivery.
	Options Options
	// Production applies the production outbound URL rules at every dial.
	Production bool
	// Resolver resolves target hosts at every dial; nil means the system
	// resolver.
	Resolver outbound.Resolver
	// Breakers are the per-host circuit breakers deliveries go through.
	Breakers *outbound.Breakers
	// Version goes into the User-Agent of deliveries.
	Version string
	// Log receives each delivery's outcome; nil discards it.
	Log *slog.Logger
	// ReloadEvery is how often the webhooks are read again from the store
	// (for a store other backends share); 0 means only at start and after
	// changes made through this dispatcher's Refresh.
	ReloadEvery time.Duration
	// Deliveries is flow_webhook_deliveries_total{result} (see Results).
	Deliveries *prometheus.CounterVec
	// Journal, when set, keeps every delivery durable from Emit to its
	// final result (see Journal): a full queue then delays a delivery
	// instead of dropping it, and what a crash or stop left is delivered
	// after the next start. nil means in memory only: best-effort.
	Journal Journal
}

// journalRescan is how often the journal is read for deliveries that did
// not fit the queue (and how soon after a start the leftovers go out).
const journalRescan = 2 * time.Second

// New builds the dispatcher; Start runs its workers.
func New(cfg Config) *Dispatcher {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	o := cfg.Options.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	d := &Dispatcher{cfg: cfg, log: cfg.Log, o: o, queue: make(chan *delivery, o.QueueSize), ctx: ctx, cancel: cancel,
		live: map[string]bool{}, wake: make(chan struct{}, 1)}
	d.client = &retryablehttp.Client{
		HTTPClient: &http.Client{
			Timeout: o.Timeout, // per attempt: retryablehttp calls Do once per attempt
			Transport: &outbound.BreakerTransport{
				Next:     outbound.Transport(cfg.Production, cfg.Resolver, o.Timeout),
				Breakers: cfg.Breakers,
			},
			// A redirect is an answer, not a place to go: 3xx is a failure.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		Logger:       nil, // the dispatcher logs each delivery's outcome itself
		RetryWaitMin: o.RetryWaitMin,
		RetryWaitMax: o.RetryWaitMax,
		RetryMax:     o.MaxAttempts - 1,
		CheckRetry:   webhookRetryPolicy,
		Backoff:      webhookBackoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		PrepareRetry: func(req *http.Request) error {
			if dl, ok := req.Context().Value(deliveryKey{}).(*delivery); ok {
				dl.attempts++
				req.Header = req.Header.Clone() // the previous attempt's request keeps its own
				signRequest(req.Header, dl)
			}
			return nil
		},
	}
	return d
}

// Start runs the workers.
func (d *Dispatcher) Start() {
	for range d.o.Workers {
		d.wg.Add(1)
		go d.work()
	}
	if d.cfg.ReloadEvery > 0 {
		d.wg.Add(1)
		go d.reloadLoop(d.cfg.ReloadEvery)
	}
	if d.cfg.Journal != nil {
		d.wg.Add(1)
		go d.feed()
	}
}

// feed queues the journal's deliveries that are not queued or under way:
// at start (what a crash or stop left), and after a full queue or a put-off
// delivery (checked every journalRescan, or at once when Emit wakes it). In
// the steady state it does not read the journal at all.
func (d *Dispatcher) feed() {
	defer d.wg.Done()
	t := time.NewTicker(journalRescan)
	defer t.Stop()
	d.behind.Store(true) // what the last run left
	for {
		if d.behind.Swap(false) {
			d.rescan()
		}
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		case <-d.wake:
		}
	}
}

// rescan queues the journal's oldest deliveries that are not in memory.
func (d *Dispatcher) rescan() {
	ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
	recs, err := d.cfg.Journal.Pending(ctx, d.o.QueueSize)
	cancel()
	if err != nil && d.ctx.Err() == nil {
		d.behind.Store(true)
		d.log.Warn("cannot read the webhook journal; trying again", "err", err)
	}
	for _, r := range recs {
		dl := &delivery{id: r.ID, hookID: r.HookID, event: r.Event, body: r.Body}
		if !d.enqueue(dl) {
			d.behind.Store(true) // full: the next rescan goes on
			return
		}
	}
	if len(recs) == d.o.QueueSize {
		d.behind.Store(true) // there may be more than one read returns
	}
}

// enqueue puts dl on the queue unless it is there already (journal) or
// the queue is full (deliveries or bytes); false when it did not fit.
func (d *Dispatcher) enqueue(dl *delivery) bool {
	if d.ctx.Err() != nil {
		return false
	}
	if d.cfg.Journal != nil {
		d.liveMu.Lock()
		if d.live[dl.id] {
			d.liveMu.Unlock()
			return true
		}
		d.live[dl.id] = true
		d.liveMu.Unlock()
	}
	n := int64(len(dl.body))
	if d.queued.Add(n) <= d.o.MaxQueueBytes {
		select {
		case d.queue <- dl:
			return true
		default:
		}
	}
	d.queued.Add(-n)
	d.forget(dl.id)
	return false
}

// forget ends dl's stay in the live set.
func (d *Dispatcher) forget(id string) {
	if d.cfg.Journal != nil {
		d.liveMu.Lock()
		delete(d.live, id)
		d.liveMu.Unlock()
	}
}

// reloadLoop reloads the webhooks every interval until Stop, so webhooks
// created or deleted through other backends sharing the store are seen.
func (d *Dispatcher) reloadLoop(every time.Duration) {
	defer d.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(d.ctx, 10*time.Second)
			if err := d.Reload(ctx); err != nil && d.ctx.Err() == nil {
				d.log.Warn("cannot reload the webhooks; events follow the previous list", "err", err)
			}
			cancel()
		}
	}
}

// Stop ends the workers: attempts under way are cancelled, and deliveries
// still queued are dropped (counted).
func (d *Dispatcher) Stop(ctx context.Context) error {
	d.cancel()
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(errors.New("webhook workers did not stop"), ctx.Err())
	}
	if n := len(d.queue); n > 0 && d.cfg.Journal == nil {
		d.count(deliveryDropped, n)
		d.log.Warn("webhook deliveries dropped at shutdown (deliveries are kept in memory only)", "deliveries", n)
	} else if n > 0 {
		d.log.Info("webhook deliveries left in the journal at shutdown; the next start delivers them", "deliveries", n)
	}
	d.client.HTTPClient.CloseIdleConnections()
	return nil
}

// Reload reads the webhooks from the store and installs them.
func (d *Dispatcher) Reload(ctx context.Context) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	subs, err := store.LoadWebhooks(ctx, d.cfg.Store)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.subs = subs
	d.mu.Unlock()
	return nil
}

// Refresh is Reload after a committed create or delete.
func (d *Dispatcher) Refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Reload(ctx); err != nil {
		d.log.Error("cannot reload the webhooks after a change; events follow the previous list until the next change", "err", err)
	}
}

func (d *Dispatcher) count(result string, n int) {
	d.cfg.Deliveries.WithLabelValues(result).Add(float64(n))
}

// Emit queues a delivery of event to every webhook subscribed to it that
// may read owner's resources. It never blocks: a delivery that does not fit
// the queue is dropped.
func (d *Dispatcher) Emit(event, owner string, data any) {
	d.mu.RLock()
	var targets []store.WebhookRecord
	for _, h := range d.subs {
		if h.Wants(event) && h.Sees(owner) {
			targets = append(targets, h)
		}
	}
	d.mu.RUnlock()
	if len(targets) == 0 {
		return
	}
	// Encoded now: the caller may change data once Emit returns.
	body, err := httpx.Marshal(envelope{ID: store.NewID(), Event: event, CreatedAt: time.Now().UTC(), Data: data})
	if err != nil {
		d.count(deliveryFailure, len(targets))
		d.log.Error("cannot encode a webhook event; not delivered", "event", event, "err", err)
		return
	}
	dls := make([]*delivery, len(targets))
	for i, h := range targets {
		dls[i] = &delivery{id: store.NewID(), hookID: h.ID, hook: h, event: event, body: body}
	}
	journaled := false
	if d.cfg.Journal != nil {
		recs := make([]Record, len(dls))
		for i, dl := range dls {
			recs[i] = Record{ID: dl.id, HookID: dl.hookID, Event: event, Body: body}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := d.cfg.Journal.Push(ctx, recs)
		cancel()
		if err != nil {
			d.log.Error("cannot write webhook deliveries to the journal; delivering from memory only", "event", event, "err", err)
		}
		journaled = err == nil
	}
	for _, dl := range dls {
		if d.enqueue(dl) {
			continue
		}
		if journaled {
			d.behind.Store(true)
			select { // kept in the journal: the feeder queues it when there is room
			case d.wake <- struct{}{}:
			default:
			}
			continue
		}
		h := dl.hook
		d.count(deliveryDropped, 1)
		d.log.Warn("webhook delivery dropped: the queue is full (deliveries or bytes) or the server is stopping",
			"webhook_id", h.ID, "event", event, "delivery_id", dl.id)
	}
}

func (d *Dispatcher) work() {
	defer d.wg.Done()
	for {
		select {
		case <-d.ctx.Done():
			return
		case dl := <-d.queue:
			d.queued.Add(-int64(len(dl.body)))
			result := d.deliver(dl)
			if result == deliveryDropped && d.ctx.Err() == nil {
				d.behind.Store(true) // put off, still in the journal
			}
			if result != deliveryDropped && d.cfg.Journal != nil {
				// Final: out of the journal. A delivery cut short by a
				// stop stays there for the next start.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := d.cfg.Journal.Ack(ctx, dl.id); err != nil {
					d.log.Warn("cannot remove a delivery from the webhook journal; it may be made again", "delivery_id", dl.id, "err", err)
				}
				cancel()
			}
			d.forget(dl.id)
		}
	}
}

// deliver makes the attempts of one delivery, records its result and
// returns it ("" when the webhook is gone).
func (d *Dispatcher) deliver(dl *delivery) string {
	log := d.log.With("webhook_id", dl.hookID, "event", dl.event, "delivery_id", dl.id)
	// A webhook deleted since the event was emitted gets nothing; one
	// changed since gets the delivery at its current URL and secret.
	var hook store.WebhookRecord
	err := d.cfg.Store.View(d.ctx, func(tx store.Tx) error {
		return store.GetJSON(tx, store.Key(store.PfxWebhook, dl.hookID), &hook)
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ""
	case err != nil && d.ctx.Err() != nil:
		d.count(deliveryDropped, 1)
		return deliveryDropped
	case err != nil && dl.hook.ID == "":
		log.Warn("cannot read the webhook; trying again later", "err", err)
		return deliveryDropped
	case err != nil:
		log.Warn("cannot read the webhook again; delivering as emitted", "err", err)
	default:
		dl.hook = hook
	}

	req, err := retryablehttp.NewRequestWithContext(context.WithValue(d.ctx, deliveryKey{}, dl), http.MethodPost, dl.hook.URL, dl.body)
	if err != nil {
		d.count(deliveryFailure, 1)
		log.Error("webhook delivery failed: cannot build the request", "err", err)
		return deliveryFailure
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "flowedge-api/"+d.cfg.Version)
	h.Set(HeaderEvent, dl.event)
	h.Set(HeaderDelivery, dl.id)
	h.Set("X-Flow-Webhook-ID", dl.hook.ID)
	dl.attempts = 1
	signRequest(h, dl)

	start := time.Now()
	resp, err := d.client.Do(req)
	status := 0
	if resp != nil {
		status = resp.StatusCode
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
	var result string
	switch {
	case err == nil && status >= 200 && status <= 299:
		result = deliverySuccess
	case errors.Is(err, outbound.ErrBreakerOpen):
		result = deliveryBreakerOpen
	case d.ctx.Err() != nil:
		result = deliveryDropped // stopped mid-delivery
	default:
		result = deliveryFailure
	}
	d.count(result, 1)
	attrs := []any{"result", result, "attempts", dl.attempts, "status", status, "duration_ms", time.Since(start).Milliseconds()}
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may carry a token
		}
		attrs = append(attrs, "err", err.Error())
	}
	if result == deliverySuccess {
		log.Debug("webhook delivered", attrs...)
	} else {
		log.Warn("webhook not delivered", attrs...)
	}
	return result
}

// signRequest stamps an attempt with the current time and its signature.
func signRequest(h http.Header, dl *delivery) {
	ts := time.Now().Unix()
	h.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderSignature, Sign(dl.hook.Secret, ts, dl.body))
}

// webhookRetryPolicy retries connection errors, timeouts, 408, 429 and 5xx
// but 501; never a refused address, an open breaker, a certificate
// error, or after the dispatcher stopped.
func webhookRetryPolicy(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		var certErr *tls.CertificateVerificationError
		if errors.Is(err, outbound.ErrBreakerOpen) || errors.Is(err, outbound.ErrBlockedAddr) || errors.As(err, &certErr) {
			return false, nil
		}
		return true, nil
	}
	return outbound.HostFailure(resp.StatusCode) && resp.StatusCode != http.StatusNotImplemented, nil
}

// webhookBackoff waits, before retry attempt+1, a random time between lo
// and lo·2^attempt (capped at hi); a Retry-After of a 429 or 503 is
// honoured, within [lo, hi].
func webhookBackoff(lo, hi time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) {
		if d, ok := httpx.RetryAfter(resp.Header.Get("Retry-After"), time.Now(), time.Hour); ok {
			return clamp(d, lo, hi)
		}
	}
	ceil := lo
	for i := 0; i < attempt && ceil < hi; i++ {
		ceil *= 2
	}
	ceil = clamp(ceil, lo, hi)
	return lo + rand.N(ceil-lo+1)
}

func clamp(d, lo, hi time.Duration) time.Duration {
	return max(lo, min(d, hi))
}
