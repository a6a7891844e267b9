// Package admin is the edge's admin listener: health, metrics, and the
// /edge/v1 API over deliveries, dead letters and partitions. When a token is
// set, /edge/v1/* requires it as a bearer token; health and metrics stay open.
package admin

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flowedge/flowedge/internal/buffer"
	"github.com/flowedge/flowedge/internal/delivery"
	"github.com/flowedge/flowedge/internal/httpx"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Deliveries is what the admin API needs of the delivery engine: look a
// delivery up, describe partitions, and list, replay and discard dead
// letters (a replay goes through the engine, which re-queues the record and
// hands it to its partition, so nothing is left stuck).
type Deliveries interface {
	Lookup(id string) (delivery.View, error)
	Partitions() []delivery.PartitionView
	ReadyPartitions() (ready, total int)
	Misconfigured() []string // partitions whose backend claims another partition or count
	DeadLetters(p int, cursor string, limit int) ([]buffer.DeadLetter, string, error)
	Replay(ctx context.Context, id string) (*buffer.Record, error)
	Discard(ctx context.Context, id string) error
	Err() error // the queue's last write error (disk full, I/O); one wrapping buffer.ErrSyncFailed for good after a failed sync
}

// Options configure the admin handler.
type Options struct {
	Deliveries Deliveries // required
	Gatherer   prometheus.Gatherer
	Token      string // "" = /edge/v1 open
	Version    string
}

// Handler serves the admin listener.
type Handler struct {
	opt      Options
	mux      *http.ServeMux
	draining atomic.Bool
	hist     *history
}

// New builds the admin handler.
func New(opt Options) *Handler {
	h := &Handler{opt: opt, mux: http.NewServeMux(), hist: newHistory(opt.Gatherer, 0, 0)}
	h.mux.HandleFunc("GET /health/liveness", h.liveness)
	h.mux.HandleFunc("GET /health/readiness", h.readiness)
	h.mux.HandleFunc("GET /health/health", h.health)
	if opt.Gatherer != nil {
		h.mux.Handle("GET /metrics", promhttp.HandlerFor(opt.Gatherer, promhttp.HandlerOpts{}))
	}
	h.mux.Handle("GET /edge/v1/deliveries/{id}", h.auth(h.delivery))
	h.mux.Handle("GET /edge/v1/partitions", h.auth(h.partitions))
	h.mux.Handle("GET /edge/v1/dead-letters", h.auth(h.deadLetters))
	h.mux.Handle("POST /edge/v1/dead-letters/{id}/replay", h.auth(h.replay))
	h.mux.Handle("DELETE /edge/v1/dead-letters/{id}", h.auth(h.discard))
	h.statusRoutes()
	h.pprofRoutes()
	return h
}

// SetDraining turns readiness false (on SIGTERM, before the listeners close).
func (h *Handler) SetDraining() { h.draining.Store(true) }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

func (h *Handler) auth(next func(http.ResponseWriter, *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h.opt.Token != "" {
			got := r.Header.Get("Authorization")
			want := "Bearer " + h.opt.Token
			if subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="edge admin"`)
				httpx.WriteProblem(w, httpx.Problem{Status: http.StatusUnauthorized, Detail: "a valid admin bearer token is required", RequestID: httpx.RequestID(r)})
				return
			}
		}
		next(w, r)
	})
}

// liveness is 200 while the process serves, 503 once a failed sync has
// stopped the queue: only a restart, which reopens the queue, brings it
// back.
func (h *Handler) liveness(w http.ResponseWriter, _ *http.Request) {
	if err := h.opt.Deliveries.Err(); errors.Is(err, buffer.ErrSyncFailed) {
		httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "restart needed", "error": err.Error()})
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readiness is 200 while the edge accepts traffic: not draining and the
// queue writable.
func (h *Handler) readiness(w http.ResponseWriter, _ *http.Request) {
	err := h.opt.Deliveries.Err() // once: a write may clear it meanwhile
	switch {
	case h.draining.Load():
		httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
	case err != nil:
		httpx.WriteJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "buffer error", "error": err.Error()})
	default:
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

type check struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	Ready  *int   `json:"ready,omitempty"`
	Total  *int   `json:"total,omitempty"`
}

// health: unhealthy (503) when the queue cannot be written, the edge is
// draining or a backend claims another partition than the edge maps it to
// (misconfigured: nothing is delivered to it until the configuration
// agrees); degraded (200) when some backends are not ready; else healthy.
func (h *Handler) health(w http.ResponseWriter, _ *http.Request) {
	checks := map[string]check{}
	status, code := "healthy", http.StatusOK
	if err := h.opt.Deliveries.Err(); err != nil {
		checks["buffer"] = check{Status: "error", Error: err.Error()}
		status, code = "unhealthy", http.StatusServiceUnavailable
	} else {
		checks["buffer"] = check{Status: "ok"}
	}
	ready, total := h.opt.Deliveries.ReadyPartitions()
	bc := check{Status: "ok", Ready: &ready, Total: &total}
	if ready < total {
		bc.Status = "degraded"
		if status == "healthy" {
			status = "degraded"
		}
	}
	if mis := h.opt.Deliveries.Misconfigured(); len(mis) > 0 {
		bc.Status, bc.Error = "misconfigured", strings.Join(mis, "; ")
		status, code = "unhealthy", http.StatusServiceUnavailable
	}
	checks["backends"] = bc
	if h.draining.Load() {
		status, code = "unhealthy", http.StatusServiceUnavailable
		checks["edge"] = check{Status: "draining"}
	}
	httpx.WriteJSON(w, code, map[string]any{
		"status": status, "timestamp": time.Now().UnixMilli(), "version": h.opt.Version, "checks": checks,
	})
}

func (h *Handler) problem(w http.ResponseWriter, r *http.Request, status int, detail string) {
	httpx.WriteProblem(w, httpx.Problem{Status: status, Detail: detail, RequestID: httpx.RequestID(r)})
}

func (h *Handler) notFoundOr500(w http.ResponseWriter, r *http.Request, err error, what string) {
	if errors.Is(err, buffer.ErrNotFound) {
		h.problem(w, r, http.StatusNotFound, "no "+what+" with id "+r.PathValue("id"))
		return
	}
	h.problem(w, r, http.StatusInternalServerError, err.Error())
}

func (h *Handler) delivery(w http.ResponseWriter, r *http.Request) {
	v, err := h.opt.Deliveries.Lookup(r.PathValue("id"))
	if err != nil {
		h.notFoundOr500(w, r, err, "delivery")
		return
	}
	httpx.WriteJSON(w, http.StatusOK, v)
}

func (h *Handler) partitions(w http.ResponseWriter, _ *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"partitions": h.opt.Deliveries.Partitions()})
}

// DeadLetterView is a dead letter as /edge/v1/dead-letters shows it.
type DeadLetterView struct {
	ID             string    `json:"id"`
	Partition      int       `json:"partition"`
	Key            string    `json:"key"`
	Method         string    `json:"method"`
	Path           string    `json:"path"`
	Attempts       int       `json:"attempts"`
	Reason         string    `json:"reason"`
	ResponseStatus int       `json:"response_status"`
	Parked         bool      `json:"parked"`
	ReceivedAt     time.Time `json:"received_at"`
	FinishedAt     time.Time `json:"finished_at"`
}

func (h *Handler) deadLetters(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := -1
	if s := q.Get("partition"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			h.problem(w, r, http.StatusBadRequest, "partition must be a partition number")
			return
		}
		p = n
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			h.problem(w, r, http.StatusBadRequest, "limit must be 1..1000")
			return
		}
		limit = n
	}
	list, next, err := h.opt.Deliveries.DeadLetters(p, q.Get("cursor"), limit)
	if err != nil {
		h.problem(w, r, http.StatusBadRequest, err.Error())
		return
	}
	out := make([]DeadLetterView, 0, len(list))
	for _, d := range list {
		v := DeadLetterView{ID: d.Outcome.ID, Partition: d.Outcome.Partition, Key: d.Outcome.Key,
			Attempts: d.Outcome.Attempts, Reason: d.Outcome.LastError, ResponseStatus: d.Outcome.ResponseStatus,
			Parked: d.Parked, ReceivedAt: d.Outcome.ReceivedAt, FinishedAt: d.Outcome.FinishedAt}
		if d.Record != nil {
			v.ID, v.Partition, v.Key, v.Method, v.Path = d.Record.ID, d.Record.Partition, d.Record.Key, d.Record.Method, d.Record.Path
		}
		out = append(out, v)
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"dead_letters": out, "next_cursor": next})
}

func (h *Handler) replay(w http.ResponseWriter, r *http.Request) {
	rec, err := h.opt.Deliveries.Replay(r.Context(), r.PathValue("id"))
	if err != nil {
		h.notFoundOr500(w, r, err, "dead letter")
		return
	}
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"delivery_id": rec.ID, "status": buffer.StatusQueued, "partition": rec.Partition})
}

func (h *Handler) discard(w http.ResponseWriter, r *http.Request) {
	if err := h.opt.Deliveries.Discard(r.Context(), r.PathValue("id")); err != nil {
		h.notFoundOr500(w, r, err, "dead letter")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
