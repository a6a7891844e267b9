package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/flowedge/flowedge/internal/api/jobs"
	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/api/webhook"
	"github.com/flowedge/flowedge/internal/objstore"
	"github.com/flowedge/flowedge/internal/outbound"
	"github.com/flowedge/flowedge/internal/partition"
	"github.com/flowedge/flowedge/internal/ratelimit"
	"github.com/microcosm-cc/bluemonday"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/cors"
)

// Options configures a Server. The zero value of each field means the
// default named on it; Store is required.
type Options struct {
	// Store holds all state. Required; the Server never closes it.
	Store Store
	// Partition is this backend's ordinal in [0, Partitions).
	Partition int
	// Partitions is how many partitions share the processes; 0 means 1.
	// With a shared store (store.Shared: PostgreSQL) the count stored there
	// rules: Partitions only initialises it when none is stored yet, and
	// Partition may be beyond it (a pod added before the count was raised
	// serves nothing until then).
	Partitions int
	// PartitionRefresh is how often the shared store's partitioning is
	// read again; 0 means 2s. Writes check it in their own transaction
	// whatever this is.
	PartitionRefresh time.Duration
	// Production turns on production rules: HSTS, and outbound (http step
	// and webhook) URLs must be HTTPS and must not reach loopback, private
	// or link-local addresses, checked again at dial time.
	Production bool
	// Version is reported by /health/health; "" means "dev".
	Version string
	// Logger receives the request log and errors; nil discards them.
	Logger *slog.Logger
	// Registry gets the flow_ metrics (and Go and process collectors) and is
	// what MetricsHandler serves; nil means a fresh registry.
	Registry *prometheus.Registry
	// Workers is how many jobs run at once (of different processes); 0 means 4.
	Workers int
	// IdempotencyTTL is how long an answer is kept for repeats of its
	// X-Request-ID / Idempotency-Key; 0 means 24h.
	IdempotencyTTL time.Duration
	// AuditRetention is how long an audit entry is kept; 0 means 365 days.
	AuditRetention time.Duration
	// MaxJobRuns is how many times a job may be started (the first run plus
	// resumes after restarts) before it is marked failed; 0 means 5.
	MaxJobRuns int
	// BootstrapKey, when set, is the secret of an admin API key created at
	// start if no key has that secret yet.
	BootstrapKey string
	// DataDir is the directory the storage health check watches; "" skips
	// the built-in storage check (it reports ok).
	DataDir string
	// Health overrides the health checks and their timeouts.
	Health HealthOptions
	// HTTPClient makes the calls of http steps; nil means a client with a
	// 30s timeout whose dialer enforces the outbound URL rules.
	HTTPClient *http.Client
	// AppURLs are the origins (scheme://host[:port]) browsers may call the
	// API from (CORS; APP_URL). In production they are the only ones, and
	// must be https; outside production localhost origins are allowed too.
	// nil means none.
	AppURLs []string
	// RateLimits are the per-API-key request rates; the zero value means
	// the defaults (100/min, posts 30/min, webhooks 10/min, keys 5/min).
	RateLimits RateLimits
	// TrustedProxies are the addresses of proxies (the edge) whose
	// X-Forwarded-For names the client, for the audit log's client IP. nil
	// means none: the client is the peer of the connection.
	TrustedProxies []netip.Prefix
	// Resolver resolves the host names of outbound calls (webhooks, http
	// steps) when a webhook is created and at every dial, where production
	// refuses internal addresses; nil means the system resolver.
	Resolver Resolver
	// Webhooks tunes webhook delivery and the per-host circuit breakers.
	Webhooks WebhookOptions
	// Redis (REDIS_URL) holds the rate limit buckets, shared by every pod
	// that uses it, and is what the queue health check pings. nil means
	// embedded: per-process limits, and the queue check asks the job
	// workers only. The Server never closes it.
	Redis redis.UniversalClient
	// Objects holds uploaded media (its content bucket) and is what the
	// storage health check reaches. nil means no object storage: media
	// routes answer 503 and the storage check watches DataDir only. The
	// Server never closes it.
	Objects *objstore.Store
}

// Server is the Flow API. It is safe for concurrent use.
type Server struct {
	opts     Options
	store    Store
	log      *slog.Logger
	metrics  *metrics
	locks    *locks
	runner   *jobs.Runner
	health   *health
	handler  http.Handler
	hooks    *webhook.Dispatcher // delivers webhooks; nil means events are dropped
	breakers *outbound.Breakers  // per-host circuit breakers of outbound calls
	limiter  *ratelimit.Limiter  // per-key rate limits
	cors     *cors.Cors          // CORS policy of Options.AppURLs
	text     *bluemonday.Policy  // removes HTML from user text
	draining atomic.Bool
	part     atomic.Pointer[store.Partitioning] // the shared store's, as last read; nil without one
	stopBG   context.CancelFunc                 // ends the background loops
	bg       sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New builds the Server: it creates the bootstrap key if asked to, loads
// the jobs that were queued or running when the store was last used, and
// starts the job workers. Close stops them.
func New(opts Options) (*Server, error) {
	if opts.Store == nil {
		return nil, errors.New("api: Options.Store is required")
	}
	if opts.Partitions == 0 {
		opts.Partitions = 1
	}
	shared, isShared := opts.Store.(store.Shared)
	if opts.Partitions < 1 || opts.Partition < 0 || (!isShared && opts.Partition >= opts.Partitions) {
		return nil, fmt.Errorf("api: partition %d is not in [0, %d)", opts.Partition, opts.Partitions)
	}
	if opts.PartitionRefresh <= 0 {
		opts.PartitionRefresh = 2 * time.Second
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.IdempotencyTTL <= 0 {
		opts.IdempotencyTTL = 24 * time.Hour
	}
	if opts.AuditRetention <= 0 {
		opts.AuditRetention = DefaultAuditRetention
	}
	if opts.MaxJobRuns <= 0 {
		opts.MaxJobRuns = 5
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = outbound.Client(opts.Production, ExternalTimeout, opts.Resolver)
	}
	origins := make([]string, 0, len(opts.AppURLs))
	for _, u := range opts.AppURLs {
		o, err := NormalizeOrigin(u, opts.Production)
		if err != nil {
			return nil, fmt.Errorf("api: Options.AppURLs: %w", err)
		}
		origins = append(origins, o)
	}
	limits := opts.RateLimits
	if opts.Redis != nil && limits.Redis == nil {
		limits.Redis = opts.Redis
		logger := opts.Logger
		var lastLog atomic.Int64 // unix nanoseconds of the last warning
		var missed atomic.Int64  // failures since
		limits.OnRedisError = func(err error) {
			// Once per 10 s at most: with Redis down every request fails over.
			now, last := time.Now().UnixNano(), lastLog.Load()
			if now-last < int64(10*time.Second) || !lastLog.CompareAndSwap(last, now) {
				missed.Add(1)
				return
			}
			logger.Warn("rate limit: Redis failed; each pod's own buckets decide meanwhile", "err", err, "failures_since_last_warning", missed.Swap(0))
		}
	}
	lim, err := ratelimit.New(limits)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, store: deadlineStore{opts.Store, DatabaseTimeout}, log: opts.Logger, locks: newLocks(),
		limiter: lim, cors: newCORS(opts.Production, origins), text: textPolicy()}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if isShared {
		p, err := shared.InitPartitioning(ctx, opts.Partitions)
		if err != nil {
			return nil, fmt.Errorf("api: read the partitioning: %w", err)
		}
		if p.Count != opts.Partitions {
			s.log.Warn("the database's partition count rules, not the flag", "partitions", p.Count, "epoch", p.Epoch, "flag_partitions", opts.Partitions)
		}
		s.part.Store(&p)
	}
	if opts.BootstrapKey != "" {
		if err := s.ensureBootstrapKey(ctx, opts.BootstrapKey); err != nil {
			return nil, err
		}
	}
	s.breakers = outbound.NewBreakers(opts.Webhooks.BreakerCooldown)
	s.metrics = newMetrics(opts.Registry, s)
	s.runner = jobs.New(jobs.Config{Store: s.store, Workers: opts.Workers, MaxRuns: opts.MaxJobRuns, Owns: s.owns,
		Production: opts.Production, Version: opts.Version, HTTPClient: opts.HTTPClient, Breakers: s.breakers,
		Lock: s.locks.lock, Emit: s.emit, Log: s.log,
		Metrics: jobs.Metrics{Events: s.metrics.events, Finished: s.metrics.jobsFinished, Duration: s.metrics.jobDuration}})
	s.hooks = webhook.New(webhook.Config{Store: s.store, Options: opts.Webhooks, Production: opts.Production,
		Resolver: opts.Resolver, Breakers: s.breakers, Version: opts.Version, Log: s.log,
		Deliveries: s.metrics.webhookDeliveries, ReloadEvery: sharedReload(isShared, opts.Webhooks.SharedReload),
		Journal: s.webhookJournal()})
	if err := s.hooks.Reload(ctx); err != nil {
		return nil, err
	}
	s.health = newHealth(s)
	if err := s.runner.Recover(ctx); err != nil {
		return nil, err
	}
	s.handler = s.routes()
	s.runner.Start()
	s.hooks.Start()
	bgCtx, stopBG := context.WithCancel(context.Background())
	s.stopBG = stopBG
	if isShared {
		s.bg.Add(1)
		go s.watchPartitions(bgCtx, shared, opts.PartitionRefresh)
	}
	return s, nil
}

// webhookJournal is where webhook deliveries stay until they are made:
// Redis when set, else the store; nil with Webhooks.InMemory.
func (s *Server) webhookJournal() webhook.Journal {
	switch {
	case s.opts.Webhooks.InMemory:
		return nil
	case s.opts.Redis != nil:
		return webhook.RedisJournal{Redis: s.opts.Redis, Partition: s.opts.Partition}
	}
	return webhook.StoreJournal{Store: s.store, Partition: s.opts.Partition}
}

// Handler returns the HTTP handler of the whole API.
func (s *Server) Handler() http.Handler { return s.handler }

// Drain makes readiness answer 503 from now on, so the edge stops sending
// before the listener closes.
func (s *Server) Drain() { s.draining.Store(true) }

// Close drains the server and stops the job workers, waiting for them until
// ctx ends. Running jobs stop at once and stay "running" in the store: they
// resume at the next start. Close does not close the Store. It is safe to
// call twice.
func (s *Server) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.Drain()
		s.stopBG()
		s.bg.Wait()
		s.closeErr = errors.Join(s.runner.Stop(ctx), s.hooks.Stop(ctx))
	})
	return s.closeErr
}

// MetricsHandler serves the flow_ metrics (and the Go and process
// collectors) of Options.Registry in the Prometheus text format. It is not
// part of Handler: cmd/api serves it on its own listener (-metrics-listen),
// so nothing operational is reachable through the edge's public port.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
	})
}

// access is who may call a route.
type access int

const (
	public access = iota // no key
	member               // any valid key
	admin                // an admin key
)

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, acc access, h handler) {
		mux.Handle(pattern, s.adapt(pattern, acc, h))
	}
	handle("GET /health/liveness", public, s.liveness)
	mux.Handle("GET /health/readiness", s.claimPartition(s.adapt("GET /health/readiness", public, s.readiness)))
	handle("GET /health/health", public, s.healthReport)
	handle("GET /api/v1/health", public, s.healthReport)
	mux.Handle("POST /_edge/batch", s.adaptHTTP("POST /_edge/batch", http.HandlerFunc(s.edgeBatch)))

	handle("GET /api/v1/processes", member, s.listProcesses)
	handle("GET /api/v1/processes/{pid}", member, s.getProcess)
	handle("POST /api/v1/processes/{pid}/events", member, s.write(pidLock, s.appendEvent))
	handle("GET /api/v1/processes/{pid}/events", member, s.listEvents)
	handle("GET /api/v1/processes/{pid}/events/{seq}", member, s.getEvent)

	handle("GET /api/v1/auth/check", member, s.authCheck)
	handle("POST /api/v1/apps", member, s.write(nil, s.createApp))
	handle("GET /api/v1/apps", member, s.listApps)
	handle("GET /api/v1/apps/{id}", member, s.getApp)
	handle("DELETE /api/v1/apps/{id}", member, s.write(nil, s.deleteApp))

	handle("POST /api/v1/workflows", member, s.write(nil, s.createWorkflow))
	handle("GET /api/v1/workflows", member, s.listWorkflows)
	handle("GET /api/v1/workflows/{id}", member, s.getWorkflow)
	handle("DELETE /api/v1/workflows/{id}", member, s.write(nil, s.deleteWorkflow))

	handle("POST /jobs", member, s.write(headerPIDLock, s.createJob))
	handle("GET /jobs", member, s.listJobs)
	handle("GET /jobs/{id}", member, s.getJob)
	handle("POST /jobs/{id}/cancel", member, s.cancelJob)

	handle("POST /api/v1/keys", admin, s.write(nil, s.createKey))
	handle("GET /api/v1/keys", admin, s.listKeys)
	handle("GET /api/v1/keys/{id}", admin, s.getKey)
	handle("DELETE /api/v1/keys/{id}", admin, s.write(nil, s.deleteKey))

	handle("POST /api/v1/webhooks", member, s.createWebhookRoute())
	handle("GET /api/v1/webhooks", member, s.listWebhooks)
	handle("GET /api/v1/webhooks/{id}", member, s.getWebhook)
	handle("DELETE /api/v1/webhooks/{id}", member, s.write(nil, s.deleteWebhook))

	handle("POST /api/v1/channels", member, s.write(nil, s.createChannel))
	handle("GET /api/v1/channels", member, s.listChannels)
	handle("GET /api/v1/channels/{id}", member, s.getChannel)
	handle("POST /api/v1/channels/{id}/posts", member, s.write(nil, s.createPost))
	handle("GET /api/v1/channels/{id}/posts", member, s.listPosts)
	handle("GET /api/v1/channels/{id}/posts/{post_id}", member, s.getPost)

	handle("POST /api/v1/media", member, s.uploadMedia)
	handle("GET /api/v1/media/{id}", member, s.getMedia)

	handle("GET /api/v1/audit", admin, s.listAudit)
	return s.outer(mux)
}

// routeOf is the path part of a mux pattern: the route label of metrics.
func routeOf(pattern string) string {
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		return pattern[i+1:]
	}
	return pattern
}

// adapt turns a handler into an http.Handler: partition ownership, then
// authentication, then the caller's rate limit (the class of the pattern,
// see limitClassOf), then the UUID check of id path parameters, then the
// handler, then respond.
func (s *Server) adapt(pattern string, acc access, h handler) http.Handler {
	route := routeOf(pattern)
	class := limitClassOf(pattern)
	ids := uuidParams(pattern)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{r: r, info: infoOf(r)}
		c.info.route = route
		res, err := s.admit(c, acc)
		if c.key != nil { // authenticated, even if then forbidden: it counts
			v := s.limiter.Allow(r.Context(), c.limitKey, class)
			v.SetHeaders(w.Header())
			if !v.Allowed {
				err = tooManyRequests(v)
			}
		}
		for _, name := range ids {
			if err == nil {
				_, err = idParam(r, name)
			}
		}
		if err == nil {
			res, err = h(c)
		}
		s.respond(w, r, res, err)
	})
}

// uuidParams lists the wildcards of a route pattern that hold resource ids,
// which must be UUIDs: all but {pid} (a process id is the client's key)
// and {seq}.
func uuidParams(pattern string) []string {
	var out []string
	for rest := pattern; ; {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return out
		}
		name := strings.TrimSuffix(rest[i+1:i+j], "...")
		if name != "pid" && name != "seq" && name != "$" {
			out = append(out, name)
		}
		rest = rest[i+j+1:]
	}
}

// adaptHTTP wraps a plain http.Handler (the edge's batch endpoint, which
// runs its parts through the whole chain itself) so the request log and
// metrics name its route.
func (s *Server) adaptHTTP(pattern string, h http.Handler) http.Handler {
	route := routeOf(pattern)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		infoOf(r).route = route
		h.ServeHTTP(w, r)
	})
}

// admit checks, before a handler runs, that this partition owns the
// request's process and that the caller may use the route.
func (s *Server) admit(c *call, acc access) (result, error) {
	if acc == public {
		return result{}, nil
	}
	if err := s.checkOwner(c.r); err != nil {
		return result{}, err
	}
	rec, err := s.authenticate(c.r.Context(), c.r)
	if err != nil {
		return result{}, err
	}
	key := &rec.APIKey
	c.key, c.limitKey = key, limitKeyOf(rec.Hash)
	c.info.keyID = key.ID
	c.info.userID = key.user()
	if acc == admin && key.Role != RoleAdmin {
		return result{}, forbidden("this route needs an admin key")
	}
	return result{}, nil
}

// checkOwner refuses (421) a request whose process — X-Process-ID, the
// {pid} path segment or ?process_id= — belongs to another partition.
func (s *Server) checkOwner(r *http.Request) error {
	header := r.Header.Get("X-Process-ID")
	path := r.PathValue("pid")
	query := r.URL.Query().Get("process_id")
	for _, src := range []struct{ name, pid string }{{"X-Process-ID", header}, {"process id", path}, {"process_id", query}} {
		if src.pid == "" {
			continue
		}
		if err := validPID(src.name, src.pid); err != nil {
			return err
		}
		count := s.partitions().Count
		if owner := partition.OfString(src.pid, count); owner != s.opts.Partition {
			return misdirected(src.pid, owner, s.opts.Partition, count)
		}
	}
	if header != "" && path != "" && header != path {
		return badRequest("X-Process-ID %q does not match the process %q in the path", header, path)
	}
	return nil
}

// partitions is the partitioning this backend serves under: the shared
// store's, as last read (refreshed every Options.PartitionRefresh), else
// Options.Partitions.
func (s *Server) partitions() store.Partitioning {
	if p := s.part.Load(); p != nil {
		return *p
	}
	return store.Partitioning{Count: s.opts.Partitions}
}

// claimPartition sets X-Partition: N/M (this backend's partition and the
// count it serves under) on next's answers, so an edge that maps this
// backend to another partition holds its deliveries instead of sending
// them here (docs/partitioning.md).
func (s *Server) claimPartition(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Partition", strconv.Itoa(s.opts.Partition)+"/"+strconv.Itoa(s.partitions().Count))
		next.ServeHTTP(w, r)
	})
}

// owns reports whether this partition owns pid under the partitioning
// read in tx (see checkOwnerTx).
func (s *Server) owns(tx Tx, pid string) (bool, error) {
	p, err := s.partitioning(tx)
	return err == nil && partition.OfString(pid, p.Count) == s.opts.Partition, err
}

// partitioning is the partitioning read in tx: the stored one, or, for a
// store that keeps none, Options.Partitions.
func (s *Server) partitioning(tx Tx) (store.Partitioning, error) {
	p, err := tx.Partitioning()
	if err != nil || p.Count > 0 {
		return p, err
	}
	return store.Partitioning{Count: s.opts.Partitions}, nil
}

// checkOwnerTx refuses (421) to write to pid unless this partition owns it
// under the partitioning read in tx. Every write to a process checks it in
// its own transaction, so two backends can never both write to one process
// under different counts: a change of the count conflicts with the write
// and one of them is retried.
func (s *Server) checkOwnerTx(tx Tx, pid string) error {
	p, err := s.partitioning(tx)
	if err != nil {
		return err
	}
	if owner := partition.OfString(pid, p.Count); owner != s.opts.Partition {
		if cur := s.part.Load(); cur == nil || cur.Epoch < p.Epoch {
			s.part.Store(&p) // learnt early: the refresh loop would see it soon
		}
		return misdirected(pid, owner, s.opts.Partition, p.Count)
	}
	return nil
}

// watchPartitions reloads the shared partitioning every interval until ctx
// ends; a change is logged, and the job runner takes up the queued jobs of
// the processes this partition now owns.
func (s *Server) watchPartitions(ctx context.Context, sh store.Shared, interval time.Duration) {
	defer s.bg.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var p store.Partitioning
		rctx, cancel := context.WithTimeout(ctx, DatabaseTimeout)
		err := sh.View(rctx, func(tx Tx) error {
			var err error
			p, err = tx.Partitioning()
			return err
		})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("cannot read the partitioning; serving under the last one read", "err", err)
			}
			continue
		}
		old := s.partitions()
		if p.Count < 1 || p == old {
			continue
		}
		s.part.Store(&p)
		s.log.Info("partitioning changed", "partitions", p.Count, "epoch", p.Epoch, "was_partitions", old.Count, "was_epoch", old.Epoch)
		if err := s.runner.Recover(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("cannot take up the queued jobs after a partitioning change", "err", err)
		}
	}
}

// sharedReload is how often the webhook list is re-read: every every (0:
// 10 s) when other backends share the store (they may change it), else
// never.
func sharedReload(shared bool, every time.Duration) time.Duration {
	switch {
	case !shared:
		return 0
	case every <= 0:
		return 10 * time.Second
	}
	return every
}

// MaxPIDBytes bounds a process id.
const MaxPIDBytes = 256

// validPID checks a process id: 1–256 bytes of UTF-8 without control
// characters.
func validPID(name, pid string) error {
	if pid == "" || len(pid) > MaxPIDBytes || !utf8.ValidString(pid) {
		return badRequest("%s: a process id is 1 to %d bytes of UTF-8", name, MaxPIDBytes)
	}
	for _, r := range pid {
		if r < 0x20 || r == 0x7f {
			return badRequest("%s: a process id cannot contain control characters", name)
		}
	}
	return nil
}

// pidLock is the lock of a {pid} route: the process in the path.
func pidLock(r *http.Request) string { return r.PathValue("pid") }

// headerPIDLock is the lock of a route keyed by X-Process-ID.
func headerPIDLock(r *http.Request) string { return r.Header.Get("X-Process-ID") }

// Resolver resolves host names for the outbound URL rules (see package
// outbound).
type Resolver = outbound.Resolver
