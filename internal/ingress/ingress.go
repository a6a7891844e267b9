// Package ingress is the edge's public listener: every request is client
// traffic for a backend. In mode "buffer" a request is answered only after
// it is durable in the queue (then relayed or accepted); in mode "proxy" it
// is sent to its partition's backend at once and answered synchronously.
package ingress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
	"github.com/flowedge/flowedge/internal/delivery"
	"github.com/flowedge/flowedge/internal/httpx"
	"github.com/flowedge/flowedge/internal/metrics"
	"github.com/flowedge/flowedge/internal/partition"
	"github.com/google/uuid"
	"github.com/hashicorp/go-retryablehttp"
)

// Modes of handling a request.
const (
	ModeBuffer = "buffer"
	ModeProxy  = "proxy"
)

// Options configure a Handler. Zero values mean the defaults in comments.
type Options struct {
	Queue      buffer.Queue                     // required
	Engine     *delivery.Engine                 // required
	Partitions int                              // required, >= 1
	BackendURL func(int) string                 // required: base URL of a partition's backend
	ModeFor    func(method, path string) string // nil: GET/HEAD/OPTIONS proxy, others buffer

	KeyHeader     string // "X-Process-ID"
	SpreadMissing bool   // missing key: route by a random key instead of 400
	MaxBodyBytes  int64  // 1 MiB → 413
	// MaxBodyFor, when set, gives a request's body limit (a route's own);
	// a result <= 0 means MaxBodyBytes.
	MaxBodyFor    func(method, path string) int64
	MaxURLBytes   int           // 2048 → 414
	MaxQueryBytes int           // 1024 → 414
	Accept        bool          // respond = "accept": 202 right after the durable append
	RelayTimeout  time.Duration // 2s: how long a relay waits for the outcome
	BlockWhenFull bool          // when_full = "block": hold the client while the queue is full
	BlockTimeout  time.Duration // 5s
	ProxyTimeout  time.Duration // 10s per proxied attempt

	Metrics *metrics.Edge // nil = none
	Logger  *slog.Logger  // nil = discard
}

// Handler serves the public listener.
type Handler struct {
	opt   Options
	log   *slog.Logger
	proxy *http.Client
}

// New builds a Handler.
func New(opt Options) (*Handler, error) {
	if opt.Queue == nil || opt.Engine == nil || opt.BackendURL == nil || opt.Partitions < 1 {
		return nil, errors.New("ingress: Queue, Engine, BackendURL and Partitions >= 1 are required")
	}
	if opt.KeyHeader == "" {
		opt.KeyHeader = "X-Process-ID"
	}
	if opt.MaxBodyBytes <= 0 {
		opt.MaxBodyBytes = 1 << 20
	}
	if opt.MaxURLBytes <= 0 {
		opt.MaxURLBytes = 2048
	}
	if opt.MaxQueryBytes <= 0 {
		opt.MaxQueryBytes = 1024
	}
	if opt.RelayTimeout <= 0 {
		opt.RelayTimeout = 2 * time.Second
	}
	if opt.BlockTimeout <= 0 {
		opt.BlockTimeout = 5 * time.Second
	}
	if opt.ProxyTimeout <= 0 {
		opt.ProxyTimeout = 10 * time.Second
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{opt: opt, log: opt.Logger}
	h.proxy = &http.Client{
		Timeout: opt.ProxyTimeout,
		Transport: &http.Transport{
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   128,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: opt.ProxyTimeout,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return h, nil
}

// Close releases the proxy's idle connections.
func (h *Handler) Close() { h.proxy.CloseIdleConnections() }

func (h *Handler) modeFor(r *http.Request) string {
	if h.opt.ModeFor != nil {
		return h.opt.ModeFor(r.Method, r.URL.Path)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return ModeProxy
	}
	return ModeBuffer
}

// ServeHTTP checks limits, finds the partition and hands the request to its mode.
func (h *Handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &httpx.Recorder{ResponseWriter: rw}
	mode := h.modeFor(r)
	defer func() {
		if m := h.opt.Metrics; m != nil {
			m.Requests.WithLabelValues(strconv.Itoa(w.Status), methodLabel(r.Method), mode).Inc()
			m.RequestDuration.WithLabelValues(mode).Observe(time.Since(start).Seconds())
		}
	}()

	if len(r.RequestURI) > h.opt.MaxURLBytes {
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusRequestURITooLong,
			Detail: fmt.Sprintf("URL is %d bytes; the limit is %d", len(r.RequestURI), h.opt.MaxURLBytes)})
		return
	}
	if len(r.URL.RawQuery) > h.opt.MaxQueryBytes {
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusRequestURITooLong,
			Detail: fmt.Sprintf("query is %d bytes; the limit is %d", len(r.URL.RawQuery), h.opt.MaxQueryBytes)})
		return
	}
	key := r.Header.Get(h.opt.KeyHeader)
	if key == "" {
		if !h.opt.SpreadMissing {
			httpx.WriteProblem(w, httpx.Problem{Status: http.StatusBadRequest,
				Detail: "missing " + h.opt.KeyHeader + " header: it names the process this request belongs to"})
			return
		}
		key = uuid.NewString()
	}
	limit := h.opt.MaxBodyBytes
	if h.opt.MaxBodyFor != nil {
		if l := h.opt.MaxBodyFor(r.Method, r.URL.Path); l > 0 {
			limit = l
		}
	}
	if r.ContentLength > limit {
		h.tooLarge(w, limit)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.tooLarge(w, limit)
			return
		}
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusBadRequest, Detail: "reading request body: " + err.Error()})
		return
	}
	p := partition.OfString(key, h.opt.Partitions)
	if mode == ModeProxy {
		h.serveProxy(w, r, key, p, body)
		return
	}
	h.serveBuffer(w, r, key, p, body, start)
}

func (h *Handler) tooLarge(w http.ResponseWriter, limit int64) {
	httpx.WriteProblem(w, httpx.Problem{Status: http.StatusRequestEntityTooLarge,
		Detail: fmt.Sprintf("request body exceeds %d bytes", limit)})
}

// forwardHeader returns the client's headers as a backend should see them:
// hop-by-hop and client-made forwarding headers removed, fresh
// X-Forwarded-For/-Proto/-Host set.
func (h *Handler) forwardHeader(r *http.Request) http.Header {
	hdr := r.Header.Clone()
	httpx.RemoveHopByHop(hdr)
	for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded",
		"X-Edge-Attempt", "X-Request-ID", "Idempotency-Key", "Content-Length"} {
		hdr.Del(k)
	}
	hdr.Set("X-Forwarded-For", httpx.ClientIP(r))
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	hdr.Set("X-Forwarded-Proto", proto)
	hdr.Set("X-Forwarded-Host", r.Host)
	return hdr
}

func (h *Handler) serveBuffer(w http.ResponseWriter, r *http.Request, key string, p int, body []byte, start time.Time) {
	id, err := uuid.NewV7()
	if err != nil {
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusInternalServerError, Detail: "cannot make a delivery id"})
		return
	}
	rec := &buffer.Record{
		ID: id.String(), Partition: p, Key: key, IdempotencyKey: r.Header.Get("Idempotency-Key"),
		Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: h.forwardHeader(r),
		Body: body, ReceivedAt: start,
	}
	var results <-chan delivery.Result
	cancel := func() {}
	if !h.opt.Accept {
		results, cancel = h.opt.Engine.Wait(rec.ID)
	}
	defer func() { cancel() }()

	res, err := h.append(r.Context(), rec)
	if err != nil {
		cancel()
		h.appendFailed(w, err)
		return
	}
	deliveryID := rec.ID
	if res.Duplicate {
		// Seen before: answer as the first delivery did, appending nothing.
		cancel()
		deliveryID = res.ID
		if !h.opt.Accept {
			results, cancel = h.opt.Engine.Wait(deliveryID)
		}
		if o, ok := h.opt.Engine.Outcome(deliveryID); ok {
			w.Header().Set("Idempotent-Replayed", "true")
			h.writeOutcome(w, deliveryID, resultOf(o))
			return
		}
		w.Header().Set("Idempotent-Replayed", "true")
	}
	w.Header().Set("X-Delivery-ID", deliveryID)
	if h.opt.Accept {
		writeQueued(w, deliveryID)
		return
	}
	t := time.NewTimer(h.opt.RelayTimeout)
	defer t.Stop()
	select {
	case res := <-results:
		h.writeOutcome(w, deliveryID, res)
	case <-t.C:
		writeQueued(w, deliveryID)
	case <-r.Context().Done():
		// The client left; the request is durable and will be delivered.
	}
}

// append stores rec, waiting for room when the queue is full and
// when_full = "block".
func (h *Handler) append(ctx context.Context, rec *buffer.Record) (buffer.AppendResult, error) {
	var deadline <-chan time.Time
	for {
		freed := h.opt.Queue.Freed()
		res, err := h.opt.Queue.Append(ctx, []*buffer.Record{rec})
		if err == nil {
			return res[0], nil
		}
		if !errors.Is(err, buffer.ErrFull) || !h.opt.BlockWhenFull {
			return buffer.AppendResult{}, err
		}
		if deadline == nil {
			t := time.NewTimer(h.opt.BlockTimeout)
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

func (h *Handler) appendFailed(w http.ResponseWriter, err error) {
	w.Header().Set("Retry-After", "1")
	detail := "the edge could not store the request; nothing was accepted, retry later"
	if errors.Is(err, buffer.ErrFull) {
		detail = "the edge's queue is full; nothing was accepted, retry later"
	} else {
		h.log.Error("append failed", "err", err)
	}
	httpx.WriteProblem(w, httpx.Problem{Status: http.StatusServiceUnavailable, Detail: detail})
}

func writeQueued(w http.ResponseWriter, id string) {
	httpx.WriteJSON(w, http.StatusAccepted, map[string]string{"delivery_id": id, "status": "queued"})
}

func resultOf(o *buffer.Outcome) delivery.Result {
	return delivery.Result{ID: o.ID, Status: o.Status, StatusCode: o.ResponseStatus,
		Header: o.ResponseHeader, Body: o.ResponseBody, Reason: o.LastError}
}

// writeOutcome relays a final result: the backend's own answer, or 502 for a
// dead letter.
func (h *Handler) writeOutcome(w http.ResponseWriter, id string, res delivery.Result) {
	w.Header().Set("X-Delivery-ID", id)
	if res.Status == buffer.StatusDead {
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusBadGateway, Extra: map[string]any{"delivery_id": id},
			Title: "Not delivered", Detail: "the request went to the dead letters: " + res.Reason})
		return
	}
	for k, vs := range res.Header {
		if k == "X-Delivery-Id" {
			continue
		}
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(res.Body)))
	w.WriteHeader(res.StatusCode)
	_, _ = w.Write(res.Body)
}

// serveProxy answers a request synchronously from its partition's backend,
// with quick retries for idempotent methods only.
func (h *Handler) serveProxy(w http.ResponseWriter, r *http.Request, key string, p int, body []byte) {
	ready, _ := h.opt.Engine.PartitionReady(p)
	if !ready {
		w.Header().Set("Retry-After", "2")
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusServiceUnavailable,
			Detail: fmt.Sprintf("the backend of partition %d is not ready", p)})
		return
	}
	url := h.opt.BackendURL(p) + r.URL.Path
	if r.URL.RawQuery != "" {
		url += "?" + r.URL.RawQuery
	}
	var rawBody any
	if len(body) > 0 {
		rawBody = body
	}
	req, err := retryablehttp.NewRequestWithContext(r.Context(), r.Method, url, rawBody)
	if err != nil {
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusBadRequest, Detail: err.Error()})
		return
	}
	req.Header = h.forwardHeader(r)
	req.Header.Set("X-Process-ID", key)
	req.Header.Set("X-Request-ID", uuid.NewString())
	if ik := r.Header.Get("Idempotency-Key"); ik != "" {
		req.Header.Set("Idempotency-Key", ik)
	}
	idempotent := r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions
	client := &retryablehttp.Client{
		HTTPClient:   h.proxy,
		RetryWaitMin: 50 * time.Millisecond,
		RetryWaitMax: 250 * time.Millisecond,
		RetryMax:     2,
		Backoff:      retryablehttp.LinearJitterBackoff,
		ErrorHandler: retryablehttp.PassthroughErrorHandler,
		CheckRetry: func(ctx context.Context, resp *http.Response, err error) (bool, error) {
			if ctx.Err() != nil {
				return false, ctx.Err()
			}
			if !idempotent {
				return false, nil
			}
			if err != nil {
				return true, nil
			}
			switch resp.StatusCode {
			case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
				return true, nil
			}
			return false, nil
		},
	}
	resp, err := client.Do(req)
	if err != nil || resp == nil {
		if resp != nil {
			resp.Body.Close()
		}
		if r.Context().Err() != nil {
			return
		}
		h.log.Warn("proxy failed", "partition", p, "err", err)
		w.Header().Set("Retry-After", "2")
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusServiceUnavailable,
			Detail: fmt.Sprintf("the backend of partition %d did not answer", p)})
		return
	}
	defer resp.Body.Close()
	hdr := resp.Header.Clone()
	httpx.RemoveHopByHop(hdr)
	for k, vs := range hdr {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// methodLabel bounds the method label's values.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}
