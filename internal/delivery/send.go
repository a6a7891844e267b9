package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
	"github.com/flowedge/flowedge/internal/httpx"
	"github.com/flowedge/flowedge/internal/metrics"
)

var errMisdirected = errors.New("backend does not own this key (421 Misdirected Request)")

// bookkeepTimeout bounds the queue writes that record an outcome; they run
// even when the engine is being stopped, so a delivered record is acked.
const bookkeepTimeout = 10 * time.Second

// answer is a backend's answer to one record, body read.
type answer struct {
	resp *http.Response // nil with err
	body []byte
	cut  bool // body longer than MaxResponseBody, or reading it failed
	err  error
	// unsent: pipelined behind an answer that ended the connection
	// (Connection: close, or a body cut short); the backend did not process
	// it, or may not have: it is sent again, the attempt not counted.
	unsent bool
}

// run sends one job and settles each of its records. It is a worker's whole
// work: no goroutine, client or context is made per record.
func (l *loop) run(ctx context.Context, j *job, w *wire) report {
	r := report{job: j, fates: make([]int, len(j.items))}
	l.mu.Lock()
	for _, it := range j.items {
		it.rec.Attempts++
	}
	l.mu.Unlock()
	var answers []answer
	if j.batch {
		var fallback, singly bool
		answers, fallback, singly = l.sendBatch(ctx, j.items)
		if singly {
			answers = make([]answer, len(j.items))
			for i, it := range j.items {
				answers[i] = l.sendOne(ctx, it.rec, w)
			}
		}
		if fallback {
			l.undoAttempts(j.items)
			l.gate.report(j.probe, evidenceUp, "")
			for i := range r.fates {
				r.fates[i] = fateRequeue
			}
			return r
		}
	} else if len(j.items) > 1 {
		// Pipelined on the worker's own connection (only then are there
		// several records in a request-mode job).
		recs := make([]*buffer.Record, len(j.items))
		for i, it := range j.items {
			recs[i] = it.rec
		}
		answers = make([]answer, len(j.items))
		w.sendAll(ctx, recs, answers, l.readAnswer)
	} else {
		answers = []answer{l.sendOne(ctx, j.items[0].rec, w)}
	}
	if ctx.Err() != nil {
		// Abandoned on stop: not a verdict of the backend.
		l.undoAttempts(j.items)
		l.gate.report(j.probe, evidenceNone, "")
		for i := range r.fates {
			r.fates[i] = fateHanded
		}
		return r
	}
	// Pipelined requests behind an answer that ended the connection: not
	// the backend's verdict, sent again at once, the attempt not counted.
	var unsent []*item
	for i, a := range answers {
		if a.unsent {
			r.fates[i] = fateRequeue
			unsent = append(unsent, j.items[i])
		}
	}
	if len(unsent) > 0 {
		l.undoAttempts(unsent)
	}
	// The breaker hears each key once, and a connection failure once per job.
	probe, down := j.probe, false
	for i, a := range answers {
		if a.unsent {
			continue
		}
		ev := evidenceOf(a.resp, a.err)
		if ev == evidenceDown {
			if down {
				continue
			}
			down = true
		}
		l.gate.report(probe, ev, j.items[i].rec.Key)
		probe = false
	}
	if len(answers) == 1 {
		r.fates[0] = l.settle(j.items[0], answers[0])
		return r
	}
	var wg sync.WaitGroup
	for i := range answers {
		if answers[i].unsent {
			continue
		}
		wg.Go(func() { r.fates[i] = l.settle(j.items[i], answers[i]) })
	}
	wg.Wait()
	return r
}

func (l *loop) undoAttempts(items []*item) {
	l.mu.Lock()
	for _, it := range items {
		it.rec.Attempts--
	}
	l.mu.Unlock()
}

// target is the request target exactly as the client sent it: the escaped
// path and the raw query, never a decoded form.
func target(rec *buffer.Record) string {
	if rec.RawQuery == "" {
		return rec.Path
	}
	return rec.Path + "?" + rec.RawQuery
}

// outboundHeader is rec's header as the backend gets it on this attempt.
func outboundHeader(rec *buffer.Record) http.Header {
	h := make(http.Header, len(rec.Header)+4)
	for k, vs := range rec.Header {
		h[k] = vs
	}
	httpx.RemoveHopByHop(h)
	delete(h, "Expect") // the body goes at once; see skipHeader
	h["X-Request-Id"] = []string{rec.ID}
	h["X-Process-Id"] = []string{rec.Key}
	ik := rec.IdempotencyKey
	if ik == "" {
		ik = rec.ID
	}
	h["Idempotency-Key"] = []string{ik}
	h["X-Edge-Attempt"] = []string{strconv.Itoa(rec.Attempts)}
	return h
}

// sendOne delivers rec as one HTTP request: over the worker's own
// connection w, or (h2c, https, w nil) the shared net/http client.
func (l *loop) sendOne(ctx context.Context, rec *buffer.Record, w *wire) answer {
	if w != nil {
		return w.send(ctx, rec, l.readAnswer)
	}
	u, err := url.Parse(l.e.opt.BackendURL(l.p) + target(rec))
	if err != nil {
		return answer{err: fmt.Errorf("building request: %w", err)}
	}
	req := (&http.Request{Method: rec.Method, URL: u, Host: u.Host, Header: outboundHeader(rec),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}).WithContext(ctx)
	if len(rec.Body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(rec.Body))
		req.ContentLength = int64(len(rec.Body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(rec.Body)), nil }
	}
	resp, err := l.e.client.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	return l.readAnswer(resp, resp.Body)
}

// readAnswer reads a response body up to MaxResponseBody.
func (l *loop) readAnswer(resp *http.Response, body io.Reader) answer {
	max := l.e.opt.MaxResponseBody
	b, err := io.ReadAll(io.LimitReader(body, max+1))
	a := answer{resp: resp, body: b}
	if err != nil {
		// The backend sent its status: the request took effect. Relay what came.
		l.gate.log.Warn("reading backend answer", "err", err)
		a.cut = true
	}
	if int64(len(b)) > max {
		a.body, a.cut = b[:max], true
	}
	return a
}

// settle records what an answer means for it: acknowledged, dead-lettered
// or backing off. The decision is a pure function (policy.decide); the
// queue writes come after it.
func (l *loop) settle(it *item, a answer) int {
	rec := it.rec
	now := time.Now()
	outcome, _ := classify(a.resp, a.err)
	if m := l.e.opt.Metrics; m != nil {
		m.Attempts.WithLabelValues(metrics.Partition(l.p), outcome).Inc()
	}
	verdict, wait, reason := l.e.pol.decide(a.resp, a.err, rec.Attempts, rec.ReceivedAt, now)
	switch verdict {
	case verdictFinal:
		return l.finish(it, a, now)
	case verdictDead:
		return l.bury(it, a, reason, now)
	}
	if a.resp != nil && a.resp.StatusCode == http.StatusTooManyRequests {
		// The caller's throttle: a client still waiting is told, and the
		// record is dropped (the backend applied nothing).
		if fate, told := l.finishIfWaited(it, a, now); told {
			return fate
		}
	}
	l.mu.Lock()
	rec.NextAttemptAt, rec.LastError = now.Add(wait), reason
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), bookkeepTimeout)
	defer cancel()
	if err := l.e.q.Nack(ctx, rec); err != nil {
		l.gate.log.Warn("persisting attempt", "id", rec.ID, "err", err)
	}
	return fateRetry
}

// outcome builds the final outcome of an answered record.
func (l *loop) outcome(it *item, a answer, now time.Time) buffer.Outcome {
	rec := it.rec
	header := a.resp.Header.Clone()
	httpx.RemoveHopByHop(header)
	header.Del("Content-Length")
	if a.cut {
		header.Set("X-Edge-Truncated", "true")
	}
	status := buffer.StatusDelivered
	if a.resp.StatusCode >= 400 {
		status = buffer.StatusRejected
	}
	return buffer.Outcome{
		ID: rec.ID, Partition: l.p, Key: rec.Key, Status: status, Attempts: rec.Attempts,
		ResponseStatus: a.resp.StatusCode, ResponseHeader: header, ResponseBody: a.body,
		LastError: rec.LastError, ReceivedAt: rec.ReceivedAt, FinishedAt: now,
	}
}

// finishIfWaited drops a throttled record as rejected if, and only if, a
// client still waits for it and is handed the answer. The drop is on disk
// (with fsync on) before the client hears the 429: a record that came back
// after a power cut would be delivered though its client was told it was
// not. If the drop cannot be written, it may still reach the disk (a write
// timed out, or a sync failed after the commit) or not: the clients are
// told that (Result.Unsure), and the record is left to a restart, as after
// any failed ack.
func (l *loop) finishIfWaited(it *item, a answer, now time.Time) (int, bool) {
	held := l.e.hold(it.rec.ID)
	if held == nil {
		return 0, false
	}
	out := l.outcome(it, a, now)
	out.LastError = "backend answered 429; relayed to the client, not retried"
	r := resultOf(&out)
	ctx, cancel := context.WithTimeout(context.Background(), bookkeepTimeout)
	defer cancel()
	if err := l.e.q.Ack(ctx, it.rec, out); err != nil {
		l.gate.log.Error("dropping a throttled record", "id", it.rec.ID, "err", err)
		r.Unsure = err
	} else {
		// Final only now: a repeat of the request that comes meanwhile
		// reads the loop's outcome and must not hear the 429 before the
		// drop is stored (it waits, and settle hands it the answer).
		l.mu.Lock()
		it.final = &out
		l.mu.Unlock()
		l.count(it.rec, string(out.Status))
	}
	l.e.settle(held, r)
	return fateFinal, true
}

// finish records a final answer (delivered or rejected), hands it to any
// waiting ticket and acknowledges the record.
func (l *loop) finish(it *item, a answer, now time.Time) int {
	out := l.outcome(it, a, now)
	// The outcome is the loop's before the client hears it, so a lookup
	// made right after the answer sees it (it used to say in_flight until
	// the ack below).
	// So are the metrics: a scrape made after the client's answer counts
	// the delivery (the counter was once bumped after the relay, and a
	// scrape could race it).
	l.mu.Lock()
	it.final = &out
	l.mu.Unlock()
	l.count(it.rec, string(out.Status))
	// The backend has answered: relay it now. Acking is bookkeeping; if the
	// edge dies before the ack is on disk, the record is delivered again and
	// the backend dedupes it by X-Request-ID (at-least-once, as promised).
	l.e.publish(resultOf(&out))
	return l.record(it, out)
}

// record keeps out as its final outcome and acknowledges it. The caller
// has counted it.
func (l *loop) record(it *item, out buffer.Outcome) int {
	l.mu.Lock()
	it.final = &out
	l.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), bookkeepTimeout)
	defer cancel()
	if err := l.e.q.Ack(ctx, it.rec, out); err != nil {
		// Still queued: it is delivered again after a restart (the backend dedupes).
		l.gate.log.Error("acking delivered record", "id", it.rec.ID, "err", err)
	}
	return fateFinal
}

// bury moves a record to the dead letters.
func (l *loop) bury(it *item, a answer, reason string, now time.Time) int {
	rec := it.rec
	out := buffer.Outcome{
		ID: rec.ID, Partition: l.p, Key: rec.Key, Status: buffer.StatusDead, Attempts: rec.Attempts,
		LastError: reason, ReceivedAt: rec.ReceivedAt, FinishedAt: now,
	}
	if a.resp != nil {
		out.ResponseStatus = a.resp.StatusCode
		out.ResponseHeader = a.resp.Header.Clone()
		httpx.RemoveHopByHop(out.ResponseHeader)
		out.ResponseBody = a.body[:min(len(a.body), 64<<10)]
	}
	ctx, cancel := context.WithTimeout(context.Background(), bookkeepTimeout)
	defer cancel()
	if err := l.e.q.DeadLetter(ctx, rec, out, l.e.opt.OnDead == OnDeadPark); err != nil {
		l.gate.log.Error("dead-lettering record", "id", rec.ID, "err", err)
		l.mu.Lock()
		rec.NextAttemptAt, rec.LastError = now.Add(l.e.opt.MaxBackoff), reason
		l.mu.Unlock()
		return fateRetry
	}
	l.mu.Lock()
	it.final = &out
	l.mu.Unlock()
	l.gate.log.Warn("dead letter", "id", rec.ID, "key", rec.Key, "attempts", rec.Attempts, "reason", reason)
	l.count(rec, string(buffer.StatusDead))
	l.e.publish(Result{ID: rec.ID, Status: buffer.StatusDead, StatusCode: out.ResponseStatus, Reason: reason})
	return fateDead
}

func (l *loop) count(rec *buffer.Record, result string) {
	if m := l.e.opt.Metrics; m != nil {
		part := metrics.Partition(l.p)
		m.Deliveries.WithLabelValues(part, result).Inc()
		m.Latency.WithLabelValues(part).Observe(time.Since(rec.ReceivedAt).Seconds())
	}
}
