package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/flowedge/flowedge/internal/httpx"
	"github.com/google/uuid"
)

// call is one request as a handler sees it.
type call struct {
	r    *http.Request
	info *reqInfo
	key  *APIKey // the authenticated key; nil on public routes
	// limitKey names the key's rate limit buckets: derived from the
	// secret's hash, so every pod names a key alike (a bootstrap key has
	// another id in each embedded store) and the secret's own lookup hash
	// never leaves the store.
	limitKey string
	body     []byte // the request body, read by write routes
}

// handler is a route's logic: it returns what to answer, or an error that
// respond turns into problem+json.
type handler func(c *call) (result, error)

// result is a successful answer.
type result struct {
	status   int
	value    any    // encoded as JSON unless body is set
	body     []byte // pre-encoded body (replays)
	ctype    string // Content-Type of body; "" means application/json
	location string
	replayed bool   // the answer is a stored one (idempotent repeat)
	after    func() // run once the write committed, before the answer (not on replays)
	// forRepeats, when set, is what repeats of the request get instead of
	// this answer (an answer carrying a secret must not be stored).
	forRepeats *Problem
}

func ok(v any) (result, error) { return result{status: http.StatusOK, value: v}, nil }

func created(v any, location string) (result, error) {
	return result{status: http.StatusCreated, value: v, location: location}, nil
}

func noContent() (result, error) { return result{status: http.StatusNoContent}, nil }

// encode fills res.body from res.value.
func (res *result) encode() error {
	if res.body != nil || res.value == nil {
		return nil
	}
	b, err := marshal(res.value)
	if err != nil {
		return err
	}
	res.body = append(b, '\n')
	return nil
}

// respond writes a handler's outcome: the one place answers are written.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, res result, err error) {
	if err != nil {
		s.writeProblem(w, r, err)
		return
	}
	if err := res.encode(); err != nil {
		s.writeProblem(w, r, fmt.Errorf("encode answer: %w", err))
		return
	}
	h := w.Header()
	if res.location != "" {
		h.Set("Location", res.location)
	}
	if res.replayed {
		h.Set("Idempotent-Replayed", "true")
		infoOf(r).replayed = true
	}
	if res.status == 0 {
		res.status = http.StatusOK
	}
	if res.body == nil || res.status == http.StatusNoContent {
		w.WriteHeader(res.status)
		return
	}
	ct := res.ctype
	if ct == "" {
		ct = "application/json"
	}
	h.Set("Content-Type", ct)
	h.Set("Content-Length", strconv.Itoa(len(res.body)))
	w.WriteHeader(res.status)
	_, _ = w.Write(res.body)
}

// writeProblem writes err as application/problem+json. A *Problem is written
// as is; known conditions map to their status; anything else is a 500 whose
// cause goes to the log, not to the client.
func (s *Server) writeProblem(w http.ResponseWriter, r *http.Request, err error) {
	info := infoOf(r)
	var p *Problem
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &p):
		cp := *p
		p = &cp
	case errors.As(err, &tooBig):
		p = problem(http.StatusRequestEntityTooLarge, typeValidation, "request body is larger than %d bytes", tooBig.Limit)
	case errors.Is(err, ErrStoreClosed), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		p = problem(http.StatusServiceUnavailable, typeUnavailable, "the service is shutting down or its store is unavailable")
		p.Header = http.Header{"Retry-After": {"1"}}
		s.log.Warn("request failed", "request_id", info.id, "err", err)
	default:
		p = problem(http.StatusInternalServerError, typeInternal, "internal error; the log has the cause under this request_id")
		s.log.Error("request failed", "request_id", info.id, "method", r.Method, "path", r.URL.Path, "err", err)
	}
	p.RequestID = info.id
	httpx.WriteProblem(w, *p)
}

// readBody reads the whole request body (bounded by the limit the outer
// middleware set).
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	return io.ReadAll(r.Body)
}

// decodeJSON decodes body into v, refusing unknown fields, trailing data
// and bytes that are not UTF-8 (which encoding/json would silently turn
// into U+FFFD).
func decodeJSON(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return badRequest("the request body must be a JSON object")
	}
	if !utf8.Valid(body) {
		return badRequest("the request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("invalid JSON body: data after the JSON value")
	}
	return nil
}

// Listing limits.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

// page reads the cursor and limit query parameters of a listing.
func page(r *http.Request) (cursor string, limit int, err error) {
	q := r.URL.Query()
	limit = defaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return "", 0, badRequest("limit: want an integer from 1 to %d, got %q", maxLimit, v)
		}
		limit = n
	}
	return q.Get("cursor"), limit, nil
}

// list is the shape of every listing: NextCursor, when set, fetches the
// next page through ?cursor=.
type list[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// idParam returns the path value name, which must be a UUID (400 if not).
func idParam(r *http.Request, name string) (string, error) {
	v := r.PathValue(name)
	if err := validUUID(name, v); err != nil {
		return "", err
	}
	return v, nil
}

// validUUID checks that v is a UUID in canonical form.
func validUUID(name, v string) error {
	u, err := uuid.Parse(v)
	if err != nil || u.String() != v {
		return badRequest("%s: %q is not a UUID (lower-case canonical form)", name, v)
	}
	return nil
}
