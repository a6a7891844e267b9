package httpx

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// Problem is an RFC 9457 problem detail, and an error. The zero Type means
// "about:blank" and the zero Title the status text. It is written as a JSON
// object with the members type, title, status, detail and request_id (all
// always present), then the members of Extra.
type Problem struct {
	Type      string
	Title     string
	Status    int
	Detail    string
	RequestID string
	// Header holds extra response headers (WWW-Authenticate, Allow,
	// Retry-After); nil means none.
	Header http.Header
	// Extra holds extension members (e.g. the owner partition of a 421),
	// written after the standard ones; nil means none.
	Extra map[string]any
}

func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail) }

// MarshalJSON writes the standard members in RFC order, then the
// extensions.
func (p *Problem) MarshalJSON() ([]byte, error) {
	typ := p.Type
	if typ == "" {
		typ = "about:blank"
	}
	title := p.Title
	if title == "" {
		title = http.StatusText(p.Status)
	}
	b, err := Marshal(struct {
		Type      string `json:"type"`
		Title     string `json:"title"`
		Status    int    `json:"status"`
		Detail    string `json:"detail"`
		RequestID string `json:"request_id"`
	}{typ, title, p.Status, p.Detail, p.RequestID})
	if err != nil || len(p.Extra) == 0 {
		return b, err
	}
	extra, err := Marshal(p.Extra)
	if err != nil {
		return nil, err
	}
	// {"type":…,"request_id":"…"} + {"owner":…} → {"type":…,"request_id":"…","owner":…}
	return append(append(b[:len(b)-1], ','), extra[1:]...), nil
}

// UnmarshalJSON reads the standard members; others are ignored.
func (p *Problem) UnmarshalJSON(b []byte) error {
	var v struct {
		Type      string `json:"type"`
		Title     string `json:"title"`
		Status    int    `json:"status"`
		Detail    string `json:"detail"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*p = Problem{Type: v.Type, Title: v.Title, Status: v.Status, Detail: v.Detail, RequestID: v.RequestID}
	return nil
}

// Marshal is json.Marshal without HTML escaping (answers are JSON, not
// HTML) and without a trailing newline.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// WriteProblem writes p as application/problem+json (nosniff) with status
// p.Status and the headers of p.Header.
func WriteProblem(w http.ResponseWriter, p Problem) {
	body, err := Marshal(&p)
	if err != nil {
		body = []byte(`{"type":"about:blank","title":"Internal Server Error","status":500}`)
		p.Status = http.StatusInternalServerError
	}
	body = append(body, '\n')
	h := w.Header()
	for k, v := range p.Header {
		h[k] = v
	}
	h.Set("Content-Type", "application/problem+json")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}
