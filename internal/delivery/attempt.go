package delivery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/flowedge/flowedge/internal/buffer"
	"github.com/flowedge/flowedge/internal/httpx"
	"github.com/flowedge/flowedge/internal/metrics"
)

var (
	errMisdirected = errors.New("backend does not own this key (421 Misdirected Request)")
	errStopping    = errors.New("edge is stopping")
)

// bookkeepTimeout bounds the queue writes that record an outcome; they run
// even when the engine is being stopped, so a delivered record is acked.
const bookkeepTimeout = 10 * time.Second

// deliver runs rec's attempts until a final outcome, the dead letters, or
// hand-back on stop. It owns rec while it runs.
func (e *Engine) deliver(ctx context.Context, p int, it *item) done {
	rec := it.rec
	st := &liveState{rec: rec, attempts: rec.Attempts, nextAt: rec.NextAttemptAt, lastError: rec.LastError}
	e.live.Store(rec.ID, st)
	defer e.live.Delete(rec.ID)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// On stop, abandon waits at once; an attempt under way may finish.
	unwatch := context.AfterFunc(e.stopCtx, func() {
		st.mu.Lock()
		busy := st.inAttempt
		st.mu.Unlock()
		if !busy {
			cancel()
		}
	})
	defer unwatch()

	g := e.gates[p]
	part := metrics.Partition(p)
	var probe bool
	var nextWait time.Duration
	waitGate := func() error {
		if wait := time.Until(rec.NextAttemptAt); wait > 0 && rec.Attempts > 0 {
			// Resumed after a restart: keep the backoff that was persisted.
			if !sleepCtx(ctx, wait) {
				return ctx.Err()
			}
		}
		select {
		case <-e.stopping:
			return errStopping
		default:
		}
		var err error
		probe, err = g.wait(ctx)
		return err
	}
	if err := waitGate(); err != nil {
		return done{it: it, handed: true}
	}

	url := e.opt.BackendURL(p) + rec.Path
	if rec.RawQuery != "" {
		url += "?" + rec.RawQuery
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, rec.Method, url, rec.Body)
	if err != nil {
		g.report(probe, resultNeutral)
		return e.bury(p, it, nil, fmt.Errorf("building request: %w", err))
	}
	req.Header = rec.Header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	httpx.RemoveHopByHop(req.Header)
	req.Header.Set("X-Request-ID", rec.ID)
	req.Header.Set("X-Process-ID", rec.Key)
	if rec.IdempotencyKey != "" {
		req.Header.Set("Idempotency-Key", rec.IdempotencyKey)
	} else {
		req.Header.Set("Idempotency-Key", rec.ID)
	}
	if len(rec.Body) == 0 {
		req.ContentLength = 0
	}

	retryMax := int(^uint(0) >> 1)
	if e.opt.MaxAttempts > 0 {
		retryMax = max(e.opt.MaxAttempts-rec.Attempts-1, 0)
	}
	client := &retryablehttp.Client{
		HTTPClient:   e.clients[p],
		RetryWaitMin: e.opt.InitialBackoff,
		RetryWaitMax: e.opt.MaxBackoff,
		RetryMax:     retryMax,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		RequestLogHook: func(_ retryablehttp.Logger, r *http.Request, _ int) {
			r.Header.Set("X-Edge-Attempt", strconv.Itoa(rec.Attempts+1))
			st.mu.Lock()
			st.inAttempt = true
			st.mu.Unlock()
		},
		CheckRetry: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			rec.Attempts++
			st.mu.Lock()
			st.inAttempt, st.attempts = false, rec.Attempts
			st.mu.Unlock()
			if ctx.Err() != nil {
				rec.Attempts-- // abandoned, not a verdict of the backend
				g.report(probe, resultNeutral)
				return false, ctx.Err()
			}
			outcome, retry := classify(resp, err)
			if e.opt.Metrics != nil {
				e.opt.Metrics.Attempts.WithLabelValues(part, outcome).Inc()
			}
			if !retry {
				g.report(probe, resultSuccess)
				if outcome == metrics.AttemptMisroute {
					return false, errMisdirected
				}
				return false, nil
			}
			g.report(probe, resultFailure)
			rec.LastError = attemptError(resp, err)
			now := time.Now()
			if e.opt.MaxAttempts > 0 && rec.Attempts >= e.opt.MaxAttempts {
				return false, fmt.Errorf("giving up after %d attempt(s): %s", rec.Attempts, rec.LastError)
			}
			if now.Sub(rec.ReceivedAt) >= e.opt.MaxDuration {
				return false, fmt.Errorf("giving up after %s and %d attempt(s): %s", e.opt.MaxDuration, rec.Attempts, rec.LastError)
			}
			select {
			case <-e.stopping:
				return false, errStopping
			default:
			}
			nextWait = backoff(e.opt.InitialBackoff, e.opt.MaxBackoff, e.opt.MaxRetryAfter, rec.Attempts, resp, now)
			rec.NextAttemptAt = now.Add(nextWait)
			st.mu.Lock()
			st.nextAt, st.lastError = rec.NextAttemptAt, rec.LastError
			st.mu.Unlock()
			if err := e.q.Nack(ctx, rec); err != nil {
				e.log.Warn("persisting attempt", "id", rec.ID, "partition", p, "err", err)
			}
			return true, nil
		},
		Backoff: func(_, _ time.Duration, _ int, _ *http.Response) time.Duration { return nextWait },
		PrepareRetry: func(*http.Request) error {
			select {
			case <-e.stopping:
				return errStopping
			default:
			}
			var err error
			probe, err = g.wait(ctx)
			return err
		},
	}
	resp, err := client.Do(req)
	switch {
	case err == nil:
		return e.finish(p, st, it, resp)
	case errors.Is(err, errMisdirected) || (!errors.Is(err, errStopping) && ctx.Err() == nil):
		return e.bury(p, it, resp, err)
	default:
		if resp != nil {
			resp.Body.Close()
		}
		return done{it: it, handed: true}
	}
}

// finish records a final answer (delivered or rejected), acks the record and
// hands the answer to any relay waiter.
func (e *Engine) finish(p int, st *liveState, it *item, resp *http.Response) done {
	rec := it.rec
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, e.opt.MaxResponseBody+1))
	header := resp.Header.Clone()
	httpx.RemoveHopByHop(header)
	if err != nil {
		// The backend sent its status: the request took effect. Relay what came.
		e.log.Warn("reading backend answer", "id", rec.ID, "partition", p, "err", err)
		header.Set("X-Edge-Truncated", "true")
	}
	if int64(len(body)) > e.opt.MaxResponseBody {
		body = body[:e.opt.MaxResponseBody]
		header.Set("X-Edge-Truncated", "true")
	}
	header.Del("Content-Length")
	status := buffer.StatusDelivered
	if resp.StatusCode >= 400 {
		status = buffer.StatusRejected
	}
	out := buffer.Outcome{
		ID: rec.ID, Partition: p, Key: rec.Key, Status: status, Attempts: rec.Attempts,
		ResponseStatus: resp.StatusCode, ResponseHeader: header, ResponseBody: body,
		LastError: rec.LastError, ReceivedAt: rec.ReceivedAt, FinishedAt: time.Now(),
	}
	st.mu.Lock()
	st.final = &out
	st.mu.Unlock()
	// The backend has answered: relay it now. Acking is bookkeeping; if the
	// edge dies before the ack is on disk, the record is delivered again and
	// the backend dedupes it by X-Request-ID (at-least-once, as promised).
	e.count(p, rec, string(status))
	e.publish(Result{ID: rec.ID, Status: status, StatusCode: resp.StatusCode, Header: header, Body: body})
	ctx, cancel := context.WithTimeout(context.Background(), bookkeepTimeout)
	defer cancel()
	if err := e.q.Ack(ctx, rec, out); err != nil {
		// Still queued: it will be delivered again (the backend dedupes).
		e.log.Error("acking delivered record", "id", rec.ID, "partition", p, "err", err)
	}
	return done{it: it}
}

// bury moves a record to the dead letters.
func (e *Engine) bury(p int, it *item, resp *http.Response, cause error) done {
	rec := it.rec
	out := buffer.Outcome{
		ID: rec.ID, Partition: p, Key: rec.Key, Status: buffer.StatusDead, Attempts: rec.Attempts,
		LastError: cause.Error(), ReceivedAt: rec.ReceivedAt, FinishedAt: time.Now(),
	}
	if resp != nil {
		out.ResponseStatus = resp.StatusCode
		out.ResponseHeader = resp.Header.Clone()
		httpx.RemoveHopByHop(out.ResponseHeader)
		out.ResponseBody, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), bookkeepTimeout)
	defer cancel()
	if err := e.q.DeadLetter(ctx, rec, out, e.opt.OnDead == OnDeadPark); err != nil {
		e.log.Error("dead-lettering record", "id", rec.ID, "partition", p, "err", err)
		return done{it: it, handed: true}
	}
	e.log.Warn("dead-lettered", "id", rec.ID, "partition", p, "key", rec.Key, "attempts", rec.Attempts, "reason", out.LastError)
	e.count(p, rec, string(buffer.StatusDead))
	e.publish(Result{ID: rec.ID, Status: buffer.StatusDead, StatusCode: out.ResponseStatus, Reason: out.LastError})
	return done{it: it, dead: true}
}

func (e *Engine) count(p int, rec *buffer.Record, result string) {
	if m := e.opt.Metrics; m != nil {
		part := metrics.Partition(p)
		m.Deliveries.WithLabelValues(part, result).Inc()
		m.Latency.WithLabelValues(part).Observe(time.Since(rec.ReceivedAt).Seconds())
	}
}

func attemptError(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("backend answered %d", resp.StatusCode)
}
