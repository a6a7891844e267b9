// Package intake is the edge's intake guard: an http middleware in front of
// the public handler that refuses, before anything is stored, requests from
// clients the edge should not queue for.
//
//   - Forward authentication (optional): for a request that would be stored,
//     the guard asks a check URL with the client's Authorization and
//     X-API-Key headers (nothing else). 2xx admits it; 401/403 is answered to
//     the client as the check answered it, and nothing is stored. Verdicts
//     are cached per credential hash for a TTL; when the check cannot be
//     reached, the last verdict (up to StaleFor old) still applies, else the
//     request is admitted (the backend decides at delivery) or refused with
//     503, as configured.
//   - Rate limit (optional): token buckets (golang.org/x/time/rate). A
//     credential the check admitted (a cached admit verdict) is charged to
//     its own bucket only; any other request (anonymous, a credential not
//     yet verified or refused, any credential when there is no check) is
//     charged to its client IP's bucket, and a credential also to its own.
//     So rotating credentials from one IP cannot earn fresh buckets. Over
//     a bucket: 429 with Retry-After, nothing stored.
//
// Requests the edge does not store (mode proxy: reads) pass untouched; the
// backend authenticates and limits them itself. The guard keeps only
// hashes of credentials, never the credentials.
package intake

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/flowedge/flowedge/internal/httpx"
)

// Defaults of Options.
const (
	DefaultCacheTTL     = 30 * time.Second
	DefaultCheckTimeout = 2 * time.Second
	// StaleFor is how long a verdict past its TTL is still used when the
	// check cannot be reached.
	StaleFor = time.Hour
	// maxEntries bounds the verdict cache and the limiter table each. A
	// full table is cut to 7/8 of it (expired entries first, then arbitrary
	// ones), so the O(n) sweep runs once per maxEntries/8 new clients, not
	// once per request.
	maxEntries = 100_000
	// maxDenialBody bounds the body of a 401/403 relayed from the check.
	maxDenialBody = 64 << 10
)

// Options configure a Guard. The zero value of each optional field turns
// its feature off or takes its default.
type Options struct {
	// CheckURL is the forward authentication URL; "{N}" is replaced by the
	// request's partition. "" = no forward authentication.
	CheckURL string
	// CacheTTL is how long a verdict is kept (zero: DefaultCacheTTL).
	CacheTTL time.Duration
	// RejectWhenDown answers 503 when the check cannot be reached and no
	// verdict is cached; false admits the request.
	RejectWhenDown bool
	// CheckTimeout bounds one check (zero: DefaultCheckTimeout).
	CheckTimeout time.Duration
	// Rate is the allowed requests per second per client; 0 = no limit.
	Rate float64
	// Burst is the bucket size (zero: 1).
	Burst int
	// Stored reports whether the edge stores this request (mode buffer);
	// only those are guarded. Nil: every request is guarded.
	Stored func(r *http.Request) bool
	// Partition returns the request's partition for "{N}" (nil: 0).
	Partition func(r *http.Request) int
	// Client makes the checks (nil: a client with CheckTimeout that does
	// not follow redirects: a 3xx is an answer other than a verdict).
	Client *http.Client
	// Logger (nil: discard). The guard logs transitions only (the check
	// becoming unreachable and reachable again), never one line per request.
	Logger *slog.Logger
	// Registerer gets edge_intake_refused_total{reason} (nil: not registered).
	Registerer prometheus.Registerer
}

// Reasons of edge_intake_refused_total.
const (
	RefusedRate      = "rate"       // over the client's intake limit: 429
	RefusedAuth      = "auth"       // the check answered 401/403
	RefusedCheckDown = "check_down" // the check unreachable, no verdict, when_down = reject: 503
)

// Guard is the intake guard. Create it with New; it is safe for
// concurrent use.
type Guard struct {
	opt Options
	log *slog.Logger

	flight    singleflight.Group
	checkDown atomic.Bool // the last check failed (for transition logs)
	refused   *prometheus.CounterVec

	mu       sync.Mutex
	verdicts map[string]*verdict // credential hash (and partition) → last answer of the check
	buckets  map[string]*bucket  // client → token bucket
	limit    int                 // entries per table: maxEntries (tests lower it)
	now      func() time.Time
}

// verdict is a cached answer of the check.
type verdict struct {
	admit  bool
	status int // 401 or 403 when !admit
	header http.Header
	body   []byte
	at     time.Time
}

type bucket struct {
	lim  *rate.Limiter
	seen time.Time
}

// New returns a guard, or nil when opt turns nothing on.
func New(opt Options) *Guard {
	if opt.CheckURL == "" && opt.Rate <= 0 {
		return nil
	}
	if opt.CacheTTL <= 0 {
		opt.CacheTTL = DefaultCacheTTL
	}
	if opt.CheckTimeout <= 0 {
		opt.CheckTimeout = DefaultCheckTimeout
	}
	if opt.Burst <= 0 {
		opt.Burst = 1
	}
	if opt.Client == nil {
		// A redirect is the check's answer, never followed: a check that
		// sends unauthenticated callers to a sign-in page (200) must not
		// admit them.
		opt.Client = &http.Client{Timeout: opt.CheckTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Guard{opt: opt, log: log, verdicts: map[string]*verdict{}, buckets: map[string]*bucket{}, limit: maxEntries, now: time.Now,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_intake_refused_total",
			Help: "Requests the intake guard refused before storing them, by reason (rate, auth, check_down).",
		}, []string{"reason"})}
	if opt.Registerer != nil {
		opt.Registerer.MustRegister(g.refused)
	}
	return g
}

// Wrap returns next behind the guard. A nil guard returns next.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	if g == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g.opt.Stored != nil && !g.opt.Stored(r) {
			next.ServeHTTP(w, r)
			return
		}
		cred := credential(r)
		if g.opt.Rate > 0 {
			clients := []string{cred}
			switch {
			case cred == "":
				clients = []string{"ip:" + httpx.ClientIP(r)}
			case !g.verified(r, cred):
				clients = []string{"ip:" + httpx.ClientIP(r), cred}
			}
			if wait, ok := g.allow(clients...); !ok {
				g.refused.WithLabelValues(RefusedRate).Inc()
				secs := max(int(math.Ceil(wait.Seconds())), 1)
				w.Header().Set("Retry-After", strconv.Itoa(secs))
				httpx.WriteProblem(w, httpx.Problem{Status: http.StatusTooManyRequests,
					Detail: fmt.Sprintf("intake limit of this client reached; retry in %d s", secs), RequestID: r.Header.Get("X-Request-ID")})
				return
			}
		}
		if g.opt.CheckURL != "" {
			v, err := g.check(r.Context(), r, cred)
			switch {
			case err != nil && g.opt.RejectWhenDown:
				g.refused.WithLabelValues(RefusedCheckDown).Inc()
				w.Header().Set("Retry-After", "5")
				httpx.WriteProblem(w, httpx.Problem{Status: http.StatusServiceUnavailable,
					Detail: "the credentials cannot be checked now; nothing was stored", RequestID: r.Header.Get("X-Request-ID")})
				return
			case err != nil:
				// admit: the backend authenticates it at delivery.
			case !v.admit:
				g.refused.WithLabelValues(RefusedAuth).Inc()
				for k, vs := range v.header {
					w.Header()[k] = vs
				}
				w.WriteHeader(v.status)
				_, _ = w.Write(v.body)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// credential is a hash of the request's Authorization and X-API-Key, "" when
// it has neither (anonymous).
func credential(r *http.Request) string {
	a, k := r.Header.Get("Authorization"), r.Header.Get("X-API-Key")
	if a == "" && k == "" {
		return ""
	}
	h := sha256.New()
	io.WriteString(h, a)
	h.Write([]byte{0})
	io.WriteString(h, k)
	return hex.EncodeToString(h.Sum(nil))
}

// verified reports whether the check admitted cred for this request (an
// admit verdict is cached, fresh or still usable while the check is down).
// False when there is no check.
func (g *Guard) verified(r *http.Request, cred string) bool {
	if g.opt.CheckURL == "" {
		return false
	}
	_, key := g.checkKey(r, cred)
	now := g.now()
	g.mu.Lock()
	v := g.verdicts[key]
	g.mu.Unlock()
	return v != nil && v.admit && now.Sub(v.at) < g.opt.CacheTTL+StaleFor
}

// allow takes a token from each client's bucket, in order; when one has
// none it gives back those taken and returns how long until there is. A
// bucket after an empty one is not touched (nor created).
func (g *Guard) allow(clients ...string) (time.Duration, bool) {
	now := g.now()
	var taken []*rate.Reservation
	for _, client := range clients {
		g.mu.Lock()
		b := g.buckets[client]
		if b == nil {
			if len(g.buckets) >= g.limit {
				g.sweepBuckets(now)
			}
			b = &bucket{lim: rate.NewLimiter(rate.Limit(g.opt.Rate), g.opt.Burst)}
			g.buckets[client] = b
		}
		b.seen = now
		g.mu.Unlock()
		res := b.lim.ReserveN(now, 1)
		if d := res.DelayFrom(now); d > 0 {
			res.CancelAt(now)
			for _, t := range taken {
				t.CancelAt(now)
			}
			return d, false
		}
		taken = append(taken, res)
	}
	return 0, true
}

// sweepBuckets drops buckets that have refilled (idle long enough that a
// fresh bucket is the same), then, if more than 7/8 of the limit remain,
// arbitrary ones down to that. g.mu held.
func (g *Guard) sweepBuckets(now time.Time) {
	refill := time.Duration(float64(g.opt.Burst) / g.opt.Rate * float64(time.Second))
	for k, b := range g.buckets {
		if now.Sub(b.seen) > refill {
			delete(g.buckets, k)
		}
	}
	for k := range g.buckets {
		if len(g.buckets) <= g.low() {
			break
		}
		delete(g.buckets, k)
	}
}

// low is what a sweep of a full table leaves at most: 7/8 of the limit.
func (g *Guard) low() int { return g.limit - max(g.limit/8, 1) }

// check returns the verdict for the request's credentials: a fresh cached
// one, or the check's answer (concurrent checks of one credential share one
// request). An error means the check could not be reached and no verdict
// younger than StaleFor is cached.
func (g *Guard) check(ctx context.Context, r *http.Request, cred string) (*verdict, error) {
	target, key := g.checkKey(r, cred)
	now := g.now()
	g.mu.Lock()
	cached := g.verdicts[key]
	g.mu.Unlock()
	if cached != nil && now.Sub(cached.at) < g.opt.CacheTTL {
		return cached, nil
	}
	auth, apiKey := r.Header.Get("Authorization"), r.Header.Get("X-API-Key")
	ch := g.flight.DoChan(key, func() (any, error) {
		// Not the client's context: one client going away must not fail
		// the check others wait for.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.opt.CheckTimeout)
		defer cancel()
		v, err := g.ask(cctx, target, auth, apiKey)
		if err != nil {
			if g.checkDown.CompareAndSwap(false, true) {
				g.log.Warn("auth check unreachable: cached verdicts apply, else when_down decides", "err", err,
					"when_down_reject", g.opt.RejectWhenDown)
			}
			return nil, err
		}
		if g.checkDown.CompareAndSwap(true, false) {
			g.log.Info("auth check reachable again", "url", target)
		}
		g.store(key, v)
		return v, nil
	})
	select {
	case res := <-ch:
		if res.Err == nil {
			return res.Val.(*verdict), nil
		}
		if cached != nil && now.Sub(cached.at) < g.opt.CacheTTL+StaleFor {
			return cached, nil
		}
		return nil, res.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// checkKey returns the check URL for the request ("{N}" replaced) and the
// key of its verdict for cred.
func (g *Guard) checkKey(r *http.Request, cred string) (target, key string) {
	target = g.opt.CheckURL
	if strings.Contains(target, "{N}") {
		p := 0
		if g.opt.Partition != nil {
			p = g.opt.Partition(r)
		}
		target = strings.ReplaceAll(target, "{N}", strconv.Itoa(p))
	}
	return target, target + "\x00" + cred
}

// ask sends the check. 2xx admits, 401/403 refuses (its status, its
// WWW-Authenticate and Content-Type, and its body are kept to relay);
// anything else is an error (the check is not answering as a check).
func (g *Guard) ask(ctx context.Context, target, auth, apiKey string) (*verdict, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("auth check %s: %w", target, err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if apiKey != "" {
		req.Header.Set("X-API-Key", apiKey)
	}
	resp, err := g.opt.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("auth check %s: %w", target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDenialBody))
	if err != nil {
		return nil, fmt.Errorf("auth check %s: reading the answer: %w", target, err)
	}
	switch {
	case resp.StatusCode/100 == 2:
		return &verdict{admit: true, at: g.now()}, nil
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		h := http.Header{}
		for _, k := range []string{"Content-Type", "WWW-Authenticate"} {
			if v := resp.Header.Values(k); len(v) > 0 {
				h[k] = v
			}
		}
		return &verdict{status: resp.StatusCode, header: h, body: body, at: g.now()}, nil
	default:
		return nil, fmt.Errorf("auth check %s: answered %s", target, resp.Status)
	}
}

func (g *Guard) store(key string, v *verdict) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.verdicts[key]; !ok && len(g.verdicts) >= g.limit {
		now := g.now()
		for k, old := range g.verdicts {
			if now.Sub(old.at) > g.opt.CacheTTL+StaleFor {
				delete(g.verdicts, k)
			}
		}
		for k := range g.verdicts {
			if len(g.verdicts) <= g.low() {
				break
			}
			delete(g.verdicts, k)
		}
	}
	g.verdicts[key] = v
}
