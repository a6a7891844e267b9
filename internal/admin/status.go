package admin

import (
	"context"
	"embed"
	"io/fs"
	"net/http"
	"time"

	"github.com/flowedge/flowedge/internal/httpx"
)

// The status page: GET / serves ui/index.html, GET /ui/… its script and
// style sheet, all embedded in the binary. The page holds no data: its
// script reads /edge/v1/… with the admin token (kept in the tab's
// sessionStorage, sent as an Authorization bearer header), so the page
// itself needs no token and the token never travels in a URL or a cookie.
//
//go:embed ui
var uiFiles embed.FS

// contentSecurityPolicy allows only the page's own script, style sheet and
// API calls, and images drawn from blob: URLs (the chart, fetched with the
// token). No inline script or style, no frames, no form posts.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; " +
	"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// statusRoutes adds the status page, its assets and the history endpoints
// to the admin mux.
func (h *Handler) statusRoutes() {
	sub, err := fs.Sub(uiFiles, "ui")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	assets := http.FileServerFS(sub)
	h.mux.Handle("GET /{$}", pageHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFileFS(w, r, sub, "index.html")
	})))
	h.mux.Handle("GET /ui/", pageHeaders(http.StripPrefix("/ui/", assets)))
	h.mux.Handle("GET /edge/v1/history", h.auth(h.historyJSON))
	h.mux.Handle("GET /edge/v1/history.svg", h.auth(h.historySVG))
}

// pageHeaders sets the status page's security headers.
func pageHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}

// Run samples the history shown by the status page and `edge top` until
// ctx ends. The admin handler serves without it (with an empty history).
func (h *Handler) Run(ctx context.Context) { h.hist.run(ctx) }

// HistoryView is the body of GET /edge/v1/history.
type HistoryView struct {
	IntervalSeconds float64         `json:"interval_seconds"`
	Samples         []HistorySample `json:"samples"`
}

func (h *Handler) historyJSON(w http.ResponseWriter, _ *http.Request) {
	httpx.WriteJSON(w, http.StatusOK, HistoryView{IntervalSeconds: h.hist.interval.Seconds(), Samples: h.hist.samples()})
}

func (h *Handler) historySVG(w http.ResponseWriter, _ *http.Request) {
	span := time.Duration(h.hist.size) * h.hist.interval
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Content-Security-Policy", "default-src 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(renderChart(h.hist.samples(), span))
}
