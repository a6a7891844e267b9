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
// built-in one and each zero timeout DefaultCheckTimeout.
type HealthOptions struct {
	Database Check // built-in: the store answers a read
	Storage  Check // built-in: the data directory has room, and Options.Objects' buckets answer
	Queue    Check // built-in: Options.Redis answers PING, and the job workers are alive

	DatabaseTimeout, StorageTimeout, QueueTimeout time.Duration
}

// DefaultCheckTimeout bounds each health check, so /health/health answers
// within about this long whatever hangs.
const DefaultCheckTimeout = 50 * time.Millisecond

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
	return &health{
		s:        s,
		database: newChecker("database", pick(o.Database, s.store.Ping), o.DatabaseTimeout),
		storage:  newChecker("storage", pick(o.Storage, storage), o.StorageTimeout),
		queue:    newChecker("queue", pick(o.Queue, queue), o.QueueTimeout),
	}
}

// checker runs one check with its timeout, never more than one at a time.
type checker struct {
	name    string
	fn      Check
	timeout time.Duration

	mu     sync.Mutex
	flight *flight // the run under way, nil if none
}

type flight struct {
	done chan struct{}
	err  error
}

func newChecker(name string, fn Check, timeout time.Duration) *checker {
	if timeout <= 0 {
		timeout = DefaultCheckTimeout
	}
	return &checker{name: name, fn: fn, timeout: timeout}
}

// start begins a run of the check, or joins the run still under way from
// an earlier call, so a hanging check costs one goroutine, not one per
// probe. It returns the run and the time by which to give up on it.
func (c *checker) start(now time.Time) (*flight, time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.flight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		c.flight = f
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
			defer cancel()
			err := safeCheck(ctx, c.fn)
			c.mu.Lock()
			f.err = err
			c.flight = nil
			c.mu.Unlock()
			close(f.done)
		}()
	}
	return f, now.Add(c.timeout)
}

// wait waits for f until deadline; *t is a timer to reuse (nil: one is
// made when needed).
func (c *checker) wait(f *flight, deadline time.Time, t **time.Timer) error {
	select {
	case <-f.done:
		return f.err
	default:
	}
	d := time.Until(deadline)
	if d <= 0 {
		return c.timeoutErr()
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
		return c.timeoutErr()
	}
}

func (c *checker) timeoutErr() error {
	return fmt.Errorf("%s check: no answer within %v", c.name, c.timeout)
}

// run runs the check alone: its result and how long it took.
func (c *checker) run() (time.Duration, error) {
	start := time.Now()
	f, deadline := c.start(start)
	var t *time.Timer
	err := c.wait(f, deadline, &t)
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
	dbF, dbD := h.database.start(start)
	stF, stD := h.storage.start(start)
	qF, qD := h.queue.start(start)
	var t *time.Timer
	dbErr := h.database.wait(dbF, dbD, &t)
	dbLat := time.Since(start)
	stErr := h.storage.wait(stF, stD, &t)
	qErr := h.queue.wait(qF, qD, &t)
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

// readiness: GET /health/readiness — 200 when the store answers and the
// server is not draining, else 503.
func (s *Server) readiness(c *call) (result, error) {
	if s.draining.Load() {
		return result{}, unavailable("shutting down")
	}
	if _, err := s.health.database.run(); err != nil {
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
