package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flowedge/flowedge/internal/httpx"
)

// Request limits (docs/production.md, cross-cutting). "1 MB" is 1 MiB: a body of
// exactly 1,048,576 bytes is accepted, one byte more is a 413, whether the
// client declares its length or streams it chunked. The URL limit counts
// the request target as sent (path and query, still percent-encoded); the
// query limit counts the raw query string without the "?".
const (
	MaxBodyBytes = 1 << 20 // larger bodies get 413
	MaxURLBytes  = 2048    // longer request URIs get 414
	MaxQuery     = 1024    // longer query strings get 414
)

// reqInfo is what the middleware and the handlers learn about one request
// and the request log reports.
type reqInfo struct {
	id       string // X-Request-ID (the client's, else a fresh UUIDv7)
	route    string // the matched pattern, "" when none matched
	keyID    string // the authenticated API key
	userID   string // the user that key acts for
	replayed bool   // the answer was a stored idempotent one
}

type infoKey struct{}

// infoOf returns the request's info; requests that did not pass through the
// outer middleware get an empty one.
func infoOf(r *http.Request) *reqInfo {
	if in, ok := r.Context().Value(infoKey{}).(*reqInfo); ok {
		return in
	}
	return &reqInfo{}
}

// outer wraps the router with what every request gets, in this order:
// request id, security headers, panic recovery, request log and metrics,
// URL and body limits, CORS (preflights are answered here, without an API
// key), and problem+json for unmatched routes. Answers that net/http
// writes itself before any handler runs (a malformed request line, headers
// over the server's MaxHeaderBytes) cannot carry the security headers.
func (s *Server) outer(mux *http.ServeMux) http.Handler {
	routed := s.cors.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if route, pattern := mux.Handler(r); pattern == "" {
			// No route: the mux would answer 404, 405 or a redirect in
			// plain text; answer 404 and 405 as problem+json.
			probe := &headerProbe{header: http.Header{}}
			route.ServeHTTP(probe, r)
			switch probe.status {
			case http.StatusNotFound:
				s.writeProblem(w, r, notFound("no route for %s %s", r.Method, r.URL.Path))
				return
			case http.StatusMethodNotAllowed:
				p := problem(http.StatusMethodNotAllowed, typeBlank, "%s is not allowed on %s", r.Method, r.URL.Path)
				p.Header = http.Header{"Allow": probe.header.Values("Allow")}
				s.writeProblem(w, r, p)
				return
			}
		}
		mux.ServeHTTP(w, r)
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &reqInfo{id: httpx.RequestID(r)}
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, info))
		rec := &httpx.Recorder{ResponseWriter: w}
		h := rec.Header()
		h.Set("X-Request-ID", info.id)
		s.securityHeaders(h)
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic serving request", "request_id", info.id, "panic", fmt.Sprint(v))
				if rec.Status == 0 {
					s.writeProblem(rec, r, fmt.Errorf("panic: %v", v))
				}
			}
			s.observe(r, info, rec, time.Since(start))
		}()

		switch {
		case len(r.RequestURI) > MaxURLBytes:
			s.writeProblem(rec, r, problem(http.StatusRequestURITooLong, typeValidation, "the request URI is longer than %d bytes", MaxURLBytes))
			return
		case len(r.URL.RawQuery) > MaxQuery:
			s.writeProblem(rec, r, problem(http.StatusRequestURITooLong, typeValidation, "the query string is longer than %d bytes", MaxQuery))
			return
		case r.ContentLength > bodyLimit(r):
			s.writeProblem(rec, r, &http.MaxBytesError{Limit: bodyLimit(r)})
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(rec, r.Body, bodyLimit(r))
		}
		if isPreflight(r) {
			info.route = "preflight"
		}
		routed.ServeHTTP(rec, r)
	})
}

// securityHeaders sets the headers every answer carries.
func (s *Server) securityHeaders(h http.Header) {
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-XSS-Protection", "1; mode=block")
	h.Set("Referrer-Policy", "strict-origin-when-cross-origin")
	h.Set("Cache-Control", "no-store")
	if s.opts.Production {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
}

// headerProbe records what the mux's fallback handlers would answer.
type headerProbe struct {
	header http.Header
	status int
}

func (p *headerProbe) Header() http.Header { return p.header }
func (p *headerProbe) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	return len(b), nil
}
func (p *headerProbe) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}

// methodLabel is the method label of the request metrics: the standard
// methods as they are, anything else "other". net/http accepts any token
// as a method, and each label value is a series kept for the life of the
// process, so clients must not be able to invent them.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

// observe writes the request log line and the request metrics.
func (s *Server) observe(r *http.Request, info *reqInfo, rec *httpx.Recorder, d time.Duration) {
	status := rec.Status
	if status == 0 {
		status = http.StatusOK
	}
	route := info.route
	if route == "" {
		route = "unmatched"
	}
	method := methodLabel(r.Method)
	s.metrics.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	s.metrics.duration.WithLabelValues(route, method).Observe(d.Seconds())

	level := slog.LevelInfo
	if strings.HasPrefix(route, "/health/") {
		level = slog.LevelDebug // probes every few seconds: not worth a line each
	}
	if status >= 500 {
		level = slog.LevelWarn
	}
	if !s.log.Enabled(r.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", info.id),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(d.Microseconds())/1000),
		slog.Int64("bytes", rec.Bytes),
		slog.String("key_id", info.keyID),
		slog.String("user_id", info.userID),
		slog.String("remote", r.RemoteAddr),
	}
	if pid := r.Header.Get("X-Process-ID"); pid != "" {
		attrs = append(attrs, slog.String("process_id", pid))
	}
	if a := r.Header.Get("X-Edge-Attempt"); a != "" {
		attrs = append(attrs, slog.String("edge_attempt", a))
	}
	if info.replayed {
		attrs = append(attrs, slog.Bool("replayed", true))
	}
	s.log.LogAttrs(context.WithoutCancel(r.Context()), level, "request", attrs...)
}
