// Package ingress is the edge's public listener: every request is client
// traffic for a backend. In mode "buffer" a request is answered only after
// it is durable in the queue (then relayed or accepted); in mode "proxy" it
// is sent to its partition's backend at once and answered synchronously.
package ingress

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-retryablehttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowedge/flowedge/internal/buffer"
	"github.com/flowedge/flowedge/internal/delivery"
	"github.com/flowedge/flowedge/internal/httpx"
	"github.com/flowedge/flowedge/internal/metrics"
	"github.com/flowedge/flowedge/internal/partition"
)

// Modes of handling a request.
const (
	ModeBuffer = "buffer"
	ModeProxy  = "proxy"
)

// Length limits of the headers that become part of a record. Longer values
// are the client's error (400), never an outage answer. The Idempotency-Key
// limit is api-flow's (and Stripe's): a longer key stored here would only be
// refused by the backend at delivery.
const (
	MaxKeyBytes            = 1024 // partition key header
	MaxIdempotencyKeyBytes = 255  // Idempotency-Key
)

// Submitter is what ingress needs of the delivery engine: store a request
// and get its ticket, and whether a partition can answer proxied requests.
type Submitter interface {
	Submit(ctx context.Context, rec *buffer.Record) (*delivery.Ticket, error)
	PartitionReady(p int) (ready bool, breaker string)
}

// Options configure a Handler. Zero values mean the defaults in comments.
type Options struct {
	Deliveries Submitter                        // required
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
	ProxyTimeout  time.Duration // 10s per proxied attempt
	// BatchPath is the backends' batch endpoint: a client request for it is
	// answered 404, so only the edge speaks for a batch. "" = /_edge/batch.
	BatchPath string

	Metrics *metrics.Edge // nil = none
	Logger  *slog.Logger  // nil = discard
}

// Handler serves the public listener.
type Handler struct {
	opt   Options
	log   *slog.Logger
	proxy *http.Client
	reqs  sync.Map // "code method mode" → prometheus.Counter (cached children)
	durs  [2]prometheus.Observer
}

// New builds a Handler.
func New(opt Options) (*Handler, error) {
	if opt.Deliveries == nil || opt.BackendURL == nil || opt.Partitions < 1 {
		return nil, errors.New("ingress: Deliveries, BackendURL and Partitions >= 1 are required")
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
	if opt.ProxyTimeout <= 0 {
		opt.ProxyTimeout = 10 * time.Second
	}
	if opt.BatchPath == "" {
		opt.BatchPath = delivery.DefaultBatchPath
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
	if m := opt.Metrics; m != nil {
		h.durs[0] = m.RequestDuration.WithLabelValues(ModeBuffer)
		h.durs[1] = m.RequestDuration.WithLabelValues(ModeProxy)
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

// observe counts a request, with the metric children cached per label set.
func (h *Handler) observe(status int, method, mode string, d time.Duration) {
	m := h.opt.Metrics
	if m == nil {
		return
	}
	method = methodLabel(method)
	k := strconv.Itoa(status) + " " + method + " " + mode
	c, ok := h.reqs.Load(k)
	if !ok {
		c, _ = h.reqs.LoadOrStore(k, m.Requests.WithLabelValues(strconv.Itoa(status), method, mode))
	}
	c.(prometheus.Counter).Inc()
	if mode == ModeProxy {
		h.durs[1].Observe(d.Seconds())
	} else {
		h.durs[0].Observe(d.Seconds())
	}
}

// requestTarget returns the escaped path and raw query exactly as the
// client sent them (RequestURI), never a decoded form, so %2F, %3F, %25
// and %2e%2e reach the backend unchanged.
func requestTarget(r *http.Request) (path, query string) {
	uri := r.RequestURI
	if !strings.HasPrefix(uri, "/") {
		// Absolute form (or a test request without RequestURI).
		path, query = r.URL.EscapedPath(), r.URL.RawQuery
		if path == "" {
			path = "/"
		}
		return path, query
	}
	path, query, _ = strings.Cut(uri, "?")
	return path, query
}

// ServeHTTP checks limits, finds the partition and hands the request to its mode.
func (h *Handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &httpx.Recorder{ResponseWriter: rw}
	mode := h.modeFor(r)
	defer func() { h.observe(w.Status, r.Method, mode, time.Since(start)) }()

	switch r.Method {
	case http.MethodConnect, http.MethodTrace:
		// Not client traffic for a backend: never stored or forwarded.
		w.Header().Set("Allow", "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE")
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusMethodNotAllowed,
			Detail: r.Method + " is not forwarded by the edge"})
		return
	}
	path, query := requestTarget(r)
	if r.URL.Path == h.opt.BatchPath || path == h.opt.BatchPath {
		// Only the edge speaks for a batch.
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusNotFound, Detail: "no such route"})
		return
	}
	if len(r.RequestURI) > h.opt.MaxURLBytes {
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusRequestURITooLong,
			Detail: fmt.Sprintf("URL is %d bytes; the limit is %d", len(r.RequestURI), h.opt.MaxURLBytes)})
		return
	}
	if len(query) > h.opt.MaxQueryBytes {
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusRequestURITooLong,
			Detail: fmt.Sprintf("query is %d bytes; the limit is %d", len(query), h.opt.MaxQueryBytes)})
		return
	}
	key := r.Header.Get(h.opt.KeyHeader)
	if len(key) > MaxKeyBytes {
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusBadRequest,
			Detail: fmt.Sprintf("%s is %d bytes; the limit is %d", h.opt.KeyHeader, len(key), MaxKeyBytes)})
		return
	}
	if ik := r.Header.Get("Idempotency-Key"); len(ik) > MaxIdempotencyKeyBytes {
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusBadRequest,
			Detail: fmt.Sprintf("Idempotency-Key is %d bytes; the limit is %d", len(ik), MaxIdempotencyKeyBytes)})
		return
	}
	if key == "" {
		if !h.opt.SpreadMissing {
			httpx.WriteProblem(w, httpx.Problem{Status: http.StatusBadRequest,
				Detail: "missing " + h.opt.KeyHeader + " header: it names the process this request belongs to"})
			return
		}
		key = spreadKey(r, path)
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
	body, err := readBody(w, r, limit)
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
		h.serveProxy(w, r, key, p, path, query, body)
		return
	}
	h.serveBuffer(w, r, key, p, path, query, body, start)
}

// readBody reads the whole body, sized by Content-Length when it is known.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	rd := http.MaxBytesReader(w, r.Body, limit)
	if n := r.ContentLength; n >= 0 {
		b := make([]byte, n)
		if _, err := io.ReadFull(rd, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	return io.ReadAll(rd)
}

func (h *Handler) tooLarge(w http.ResponseWriter, limit int64) {
	httpx.WriteProblem(w, httpx.Problem{Status: http.StatusRequestEntityTooLarge,
		Detail: fmt.Sprintf("request body exceeds %d bytes", limit)})
}

// dropHeaders are client headers the backend must never get as sent: the
// edge sets its own (forwarding, request id, attempt, idempotency key), and
// Expect was answered to the client already (the body is read whole): sent
// on, it makes the backend answer 100 Continue before its real answer.
var dropHeaders = []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port",
	"X-Forwarded-Prefix", "Forwarded", "X-Real-Ip", "X-Edge-Attempt", "X-Request-Id", "Idempotency-Key",
	"Content-Length", "Host", "Expect"}

// forwardHeader returns the client's headers as a backend should see them:
// hop-by-hop and client-made forwarding headers removed, fresh
// X-Forwarded-For/-Proto/-Host, X-Real-IP and Forwarded set.
func (h *Handler) forwardHeader(r *http.Request) http.Header {
	hdr := make(http.Header, len(r.Header)+4)
	for k, vs := range r.Header {
		hdr[k] = vs // values are not modified, only replaced
	}
	httpx.RemoveHopByHop(hdr)
	for _, k := range dropHeaders {
		delete(hdr, k)
	}
	ip := httpx.ClientIP(r)
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	hdr["X-Forwarded-For"] = []string{ip}
	hdr["X-Forwarded-Proto"] = []string{proto}
	hdr["X-Forwarded-Host"] = []string{r.Host}
	hdr["X-Real-Ip"] = []string{ip}
	forIP := ip
	if strings.Contains(ip, ":") {
		forIP = `"[` + ip + `]"`
	}
	hdr["Forwarded"] = []string{"for=" + forIP + ";proto=" + proto}
	return hdr
}

func (h *Handler) serveBuffer(w http.ResponseWriter, r *http.Request, key string, p int, path, query string, body []byte, start time.Time) {
	id, err := uuid.NewV7()
	if err != nil {
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusInternalServerError, Detail: "cannot make a delivery id"})
		return
	}
	ik := r.Header.Get("Idempotency-Key")
	rec := &buffer.Record{
		ID: id.String(), Partition: p, Key: key, IdempotencyKey: ik,
		IdempotencyScope: idempotencyScope(r, path, key, ik),
		Method:           r.Method, Path: path, RawQuery: query, Header: h.forwardHeader(r),
		Body: body, ReceivedAt: start,
	}
	tk, err := h.opt.Deliveries.Submit(r.Context(), rec)
	if err != nil {
		h.submitFailed(w, err)
		return
	}
	w.Header().Set("X-Delivery-ID", tk.ID)
	if tk.Duplicate {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	if h.opt.Accept {
		// 202 at once, unless the outcome is known already and 202 would
		// mislead: an idempotent repeat of a finished request, or a record
		// dropped because its 429 was handed to this ticket (Release waits
		// while such a drop is being stored).
		if res, ok := tk.Release(); ok && (tk.Duplicate || res.StatusCode == http.StatusTooManyRequests) {
			h.writeOutcome(w, tk.ID, res)
			return
		}
		writeQueued(w, tk.ID)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.opt.RelayTimeout)
	defer cancel()
	res, ok := tk.Wait(ctx)
	switch {
	case ok:
		h.writeOutcome(w, tk.ID, res)
	case r.Context().Err() != nil:
		// The client left; the request is durable and will be delivered.
	default:
		writeQueued(w, tk.ID)
	}
}

func (h *Handler) submitFailed(w http.ResponseWriter, err error) {
	if errors.Is(err, delivery.ErrConflict) {
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusUnprocessableEntity,
			Title:  "Idempotency-Key reused",
			Detail: "this Idempotency-Key was used for another request body; use a new key for a new request"})
		return
	}
	retry := "1"
	// A failed write may still reach the disk (and be delivered after a
	// restart): only a full queue is sure to hold nothing of it.
	detail := "the edge could not store the request; retry later with the same Idempotency-Key"
	switch {
	case errors.Is(err, buffer.ErrDiskLow):
		detail = "the edge's disk is nearly full; nothing was accepted, retry later"
	case errors.Is(err, buffer.ErrFull):
		detail = "the edge's queue is full; nothing was accepted, retry later"
	case errors.Is(err, buffer.ErrSyncFailed):
		// The queue logged the failure once. It takes nothing more until
		// the edge restarts (its liveness probe asks for that).
		retry = "10"
		detail = "the edge's disk failed a sync: the request may or may not be stored; retry with the same Idempotency-Key once the edge has restarted"
	case !errors.Is(err, context.Canceled):
		h.log.Error("append failed", "err", err)
	}
	w.Header().Set("Retry-After", retry)
	httpx.WriteProblem(w, httpx.Problem{Status: http.StatusServiceUnavailable, Detail: detail})
}

// writeQueued writes the fixed 202 answer without an encoder.
func writeQueued(w http.ResponseWriter, id string) {
	h := w.Header()
	h["Content-Type"] = jsonType
	b := make([]byte, 0, len(queuedHead)+len(id)+len(queuedTail))
	b = append(append(append(b, queuedHead...), id...), queuedTail...)
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write(b)
}

var jsonType = []string{"application/json"}

const (
	queuedHead = `{"delivery_id":"`
	queuedTail = `","status":"queued"}` + "\n"
)

// writeOutcome relays a final result: the backend's own answer, or 502 for a
// dead letter.
func (h *Handler) writeOutcome(w http.ResponseWriter, id string, res delivery.Result) {
	w.Header().Set("X-Delivery-ID", id)
	if res.Unsure != nil {
		// The loop logged why. The backend refused the request, but that
		// the edge dropped it could not be stored: it may be delivered
		// still, so the client must not take the refusal as final.
		w.Header().Set("Retry-After", "10")
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusServiceUnavailable, Extra: map[string]any{"delivery_id": id},
			Detail: fmt.Sprintf("the backend answered %d, but the edge could not store that it dropped the request: it may still be delivered; retry only with the same Idempotency-Key", res.StatusCode)})
		return
	}
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
func (h *Handler) serveProxy(w http.ResponseWriter, r *http.Request, key string, p int, path, query string, body []byte) {
	ready, _ := h.opt.Deliveries.PartitionReady(p)
	if !ready {
		w.Header().Set("Retry-After", "2")
		httpx.WriteProblem(w, httpx.Problem{Status: http.StatusServiceUnavailable,
			Detail: fmt.Sprintf("the backend of partition %d is not ready", p)})
		return
	}
	url := h.opt.BackendURL(p) + path
	if query != "" {
		url += "?" + query
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

// spreadKey is the routing key of a request without one (missing_key =
// "spread"): random, except that a request with an Idempotency-Key gets a
// key derived from its scope (credentials, method, path, Idempotency-Key),
// so a repeat reaches the same partition and scope and is recognised
// instead of being delivered again.
func spreadKey(r *http.Request, path string) string {
	ik := r.Header.Get("Idempotency-Key")
	if ik == "" {
		return uuid.NewString()
	}
	return "spread-" + idempotencyScope(r, path, "", ik)[:32]
}

// idempotencyScope is the scope an Idempotency-Key matches in: a digest of
// the credentials (Authorization, X-API-Key; none = anonymous), method,
// escaped path, partition key and the key itself. "" when the client sent
// no key. One client can never read or pre-claim another's answer.
func idempotencyScope(r *http.Request, path, key, ik string) string {
	if ik == "" {
		return ""
	}
	h := sha256.New()
	for _, f := range []string{r.Header.Get("Authorization"), r.Header.Get("X-API-Key"), r.Method, path, key, ik} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		io.WriteString(h, f)
	}
	return hex.EncodeToString(h.Sum(nil))
}
