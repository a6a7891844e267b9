package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Check is a health check: nil means healthy. It should return when ctx
// ends; one that does not is still abandoned at its timeout, and is not
// started again while it hangs.
type Check func(ctx context.Context) error

// HealthOptions overrides the health checks. Each nil Check means the
// built-in one; each zero check timeout means DefaultCheckTimeout, and a
// zero ReadinessTimeout DefaultReadinessTimeout.
type HealthOptions struct {
	Database Check // built-in: the store answers a read
	Storage  Check // built-in: the data directory has room, and Options.Objects' buckets answer
	Queue    Check // built-in: Options.Redis answers PING, and the job workers are alive

	// DatabaseTimeout, StorageTimeout and QueueTimeout bound how long
	// /health/health waits for each check.
	DatabaseTimeout, StorageTimeout, QueueTimeout time.Duration
	// ReadinessTimeout bounds how long /health/readiness waits for the
	// database check (a run under way for /health/health is joined, and
	// goes on for the longer of the two bounds).
	ReadinessTimeout time.Duration
}

// DefaultCheckTimeout bounds each check of /health/health, so the report
// answers within about this long whatever hangs.
const DefaultCheckTimeout = 50 * time.Millisecond

// DefaultReadinessTimeout bounds the database check of /health/readiness.
// The edge pauses a partition whose backend is not ready until its next
// probe (every 2 s by default), so a store that answers within a second
// under load is ready: 50 ms would turn a GC pause or a busy connection
// pool into a paused partition. It stays under the edge's probe interval.
const DefaultReadinessTimeout = time.Second

// Check statuses and overall statuses of /health/health.
const (
	checkOK        = "ok"
	checkError     = "error"
	statusHealthy  = "healthy"
	statusDegraded = "degraded"
	statusUnhealth = "unhealthy"
)

// HealthReport is the body of /health/health, field for field as docs/production.md
// fixes it. A failed check also says why in "error".
type HealthReport struct {
	Status    string       `json:"status"`
	Timestamp int64        `json:"timestamp"` // unix milliseconds
	Version   string       `json:"version"`
	Checks    HealthChecks `json:"checks"`
}

// HealthChecks are the checks of a HealthReport.
type HealthChecks struct {
	Database DatabaseCheck `json:"database"`
	Storage  CheckResult   `json:"storage"`
	Queue    CheckResult   `json:"queue"`
}

// DatabaseCheck is the database check: Latency is how long the store took
// to answer, in milliseconds.
type DatabaseCheck struct {
	Status  string `json:"status"`
	Latency int64  `json:"latency"`
	Error   string `json:"error,omitempty"`
}

// CheckResult is the result of a check without a latency.
type CheckResult struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

type health struct {
	s                        *Server
	database, storage, queue *checker
	readiness                time.Duration // how long readiness waits for database
}

func newHealth(s *Server) *health {
	o := s.opts.Health
	pick := func(c, def Check) Check {
		if c != nil {
			return c
		}
		return def
	}
	dir, objects, rdb := s.opts.DataDir, s.opts.Objects, s.opts.Redis
	storage := func(ctx context.Context) error {
		if dir != "" {
			if err := checkDisk(dir, minFreeBytes); err != nil {
				return err
			}
		}
		if objects != nil {
			return objects.Ping(ctx)
		}
		return nil
	}
	queue := s.runner.Check
	if rdb != nil {
		queue = func(ctx context.Context) error {
			if err := rdb.Ping(ctx).Err(); err != nil {
				return fmt.Errorf("redis: %w", err)
			}
			return s.runner.Check(ctx)
		}
	}
	readiness := o.ReadinessTimeout
	if readiness <= 0 {
		readiness = DefaultReadinessTimeout
	}
	return &health{
		s:         s,
		database:  newChecker("database", pick(o.Database, s.store.Ping), o.DatabaseTimeout, readiness),
		storage:   newChecker("storage", pick(o.Storage, storage), o.StorageTimeout, 0),
		queue:     newChecker("queue", pick(o.Queue, queue), o.QueueTimeout, 0),
		readiness: readiness,
	}
}

// checker runs one check, never more than one at a time.
type checker struct {
	name    string
	fn      Check
	timeout time.Duration // how long /health/health waits for a run
	limit   time.Duration // the run's context deadline: the longest any caller waits

	mu     sync.Mutex
	flight *flight // the run under way, nil if none
}

type flight struct {
	done chan struct{}
	err  error
}

// newChecker makes the checker of fn: timeout is how long /health/health
// waits (0: DefaultCheckTimeout), other the longest another caller waits
// (0: none waits longer).
func newChecker(name string, fn Check, timeout, other time.Duration) *checker {
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	return &checker{name: name, fn: fn, timeout: timeout, limit: max(timeout, other)}
}

// start begins a run of the check, or joins the run still under way from
// an earlier call, so a hanging check costs one goroutine, not one per
// probe. It returns the run and the time by which to give up on it, wait
// from now.
func (c *checker) start(now time.Time, wait time.Duration) (*flight, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.flight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		c.flight = f
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), c.limit)
			defer cancel()
			err := safeCheck(ctx, c.fn)
			c.mu.Lock()
			f.err = err
			c.flight = nil
			c.mu.Unlock()
			close(f.done)
		}()
	}
	return f, now.Add(wait)
}

// wait waits for f until deadline (wait after the start); *t is a timer
// to reuse (nil: one is made when needed).
func (c *checker) wait(f *flight, deadline time.Time, wait time.Duration, t **time.Timer) error {
	select {
	case <-f.done:
		return f.err
	default:
	}
	d := time.Until(deadline)
	if d <= 0 {
		return c.timeoutErr(wait)
	}
	if *t == nil {
		*t = time.NewTimer(d)
	} else {
		(*t).Reset(d)
	}
	select {
	case <-f.done:
		(*t).Stop() // since Go 1.23 no stale tick survives Stop: Reset is safe
		return f.err
	case <-(*t).C:
		return c.timeoutErr(wait)
	}
}

func (c *checker) timeoutErr(wait time.Duration) error {
	return fmt.Errorf("%s check: no answer within %v", c.name, wait)
}

// run runs the check alone, waiting up to wait: its result and how long
// it took.
func (c *checker) run(wait time.Duration) (time.Duration, error) {
	start := time.Now()
	f, deadline := c.start(start, wait)
	var t *time.Timer
	err := c.wait(f, deadline, wait, &t)
	if t != nil {
		t.Stop()
	}
	return time.Since(start), err
}

// safeCheck runs fn, turning a panic into an error.
func safeCheck(ctx context.Context, fn Check) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("check panicked: %v", v)
		}
	}()
	return fn(ctx)
}

// report runs the three checks concurrently, each bounded by its own
// timeout.
func (h *health) report() (HealthReport, int) {
	start := time.Now()
	db, st, q := h.database, h.storage, h.queue
	dbF, dbD := db.start(start, db.timeout)
	stF, stD := st.start(start, st.timeout)
	qF, qD := q.start(start, q.timeout)
	var t *time.Timer
	dbErr := db.wait(dbF, dbD, db.timeout, &t)
	dbLat := time.Since(start)
	stErr := st.wait(stF, stD, st.timeout, &t)
	qErr := q.wait(qF, qD, q.timeout, &t)
	if t != nil {
		t.Stop()
	}

	rep := HealthReport{Status: statusHealthy, Timestamp: time.Now().UnixMilli(), Version: h.s.opts.Version}
	rep.Checks.Database = DatabaseCheck{Status: checkOK, Latency: dbLat.Milliseconds()}
	rep.Checks.Storage = CheckResult{Status: checkOK}
	rep.Checks.Queue = CheckResult{Status: checkOK}
	code := http.StatusOK
	fail := func(name string, err error) string {
		h.s.metrics.checkFailures.WithLabelValues(name).Inc()
		return err.Error()
	}
	if stErr != nil {
		rep.Status = statusDegraded
		rep.Checks.Storage = CheckResult{Status: checkError, Error: fail("storage", stErr)}
	}
	if qErr != nil {
		rep.Status = statusDegraded
		rep.Checks.Queue = CheckResult{Status: checkError, Error: fail("queue", qErr)}
	}
	if dbErr != nil {
		rep.Status, code = statusUnhealth, http.StatusServiceUnavailable
		rep.Checks.Database.Status, rep.Checks.Database.Error = checkError, fail("database", dbErr)
	}
	return rep, code
}

// healthReport: GET /health/health and /api/v1/health.
func (s *Server) healthReport(c *call) (result, error) {
	rep, code := s.health.report()
	return result{status: code, value: rep}, nil
}

// liveness: GET /health/liveness — 200 while the process serves.
func (s *Server) liveness(c *call) (result, error) {
	return ok(map[string]string{"status": "alive"})
}

// readiness: GET /health/readiness — 200 when the store answers (within
// HealthOptions.ReadinessTimeout) and the server is not draining, else 503.
func (s *Server) readiness(c *call) (result, error) {
	if s.draining.Load() {
		return result{}, unavailable("shutting down")
	}
	if _, err := s.health.database.run(s.health.readiness); err != nil {
		return result{}, unavailable("the store does not answer: " + err.Error())
	}
	return ok(map[string]string{"status": "ready"})
}

func unavailable(detail string) *Problem {
	p := problem(http.StatusServiceUnavailable, typeUnavailable, "%s", detail)
	p.Header = http.Header{"Retry-After": {"1"}}
	return p
}

// minFreeBytes is the least free space the storage check accepts.
const minFreeBytes = 16 << 20

var errNoRoom = errors.New("the data directory's file system is nearly full")
