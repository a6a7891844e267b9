package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
)

// Problem types (RFC 9457 "type" URIs). Statuses that need no more than
// their title use about:blank.
const (
	typeBlank       = "about:blank"
	typeValidation  = "urn:flowedge:problem:validation"
	typeMisdirected = "urn:flowedge:problem:misdirected"
	typeIdemReuse   = "urn:flowedge:problem:idempotency-key-reuse"
	typeAuth        = "urn:flowedge:problem:unauthenticated"
	typeForbidden   = "urn:flowedge:problem:forbidden"
	typeNotFound    = "urn:flowedge:problem:not-found"
	typeConflict    = "urn:flowedge:problem:conflict"
	typeUnavailable = "urn:flowedge:problem:unavailable"
	typeInternal    = "urn:flowedge:problem:internal"
)

// Problem is an RFC 9457 problem detail and the error type handlers return
// for anything but a server fault. Extra holds extension members (e.g. the
// owner partition of a 421).
type Problem struct {
	Type      string
	Title     string
	Status    int
	Detail    string
	RequestID string
	Header    http.Header    // extra response headers (WWW-Authenticate, Allow, Retry-After)
	Extra     map[string]any // extension members, written next to the standard ones
}

func (p *Problem) Error() string { return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail) }

// MarshalJSON writes the standard members in RFC order, then the
// extensions.
func (p *Problem) MarshalJSON() ([]byte, error) {
	typ := p.Type
	if typ == "" {
		typ = typeBlank
	}
	title := p.Title
	if title == "" {
		title = http.StatusText(p.Status)
	}
	b, err := marshal(struct {
		Type      string `json:"type"`
		Title     string `json:"title"`
		Status    int    `json:"status"`
		Detail    string `json:"detail"`
		RequestID string `json:"request_id"`
	}{typ, title, p.Status, p.Detail, p.RequestID})
	if err != nil || len(p.Extra) == 0 {
		return b, err
	}
	extra, err := marshal(p.Extra)
	if err != nil {
		return nil, err
	}
	// {"type":…,"request_id":"…"} + {"owner":…} → {"type":…,"request_id":"…","owner":…}
	return append(append(b[:len(b)-1], ','), extra[1:]...), nil
}

// marshal is json.Marshal without HTML escaping (the API answers JSON, not
// HTML) and without a trailing newline.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func problem(status int, typ, format string, a ...any) *Problem {
	return &Problem{Type: typ, Title: http.StatusText(status), Status: status, Detail: fmt.Sprintf(format, a...)}
}

func badRequest(format string, a ...any) *Problem {
	return problem(http.StatusBadRequest, typeValidation, format, a...)
}

func unprocessable(format string, a ...any) *Problem {
	return problem(http.StatusUnprocessableEntity, typeValidation, format, a...)
}

func notFound(format string, a ...any) *Problem {
	return problem(http.StatusNotFound, typeNotFound, format, a...)
}

func conflict(format string, a ...any) *Problem {
	return problem(http.StatusConflict, typeConflict, format, a...)
}

func unauthorized(detail string) *Problem {
	p := problem(http.StatusUnauthorized, typeAuth, "%s", detail)
	p.Header = http.Header{"Www-Authenticate": {`Bearer realm="flow"`}}
	return p
}

func forbidden(format string, a ...any) *Problem {
	return problem(http.StatusForbidden, typeForbidden, format, a...)
}

// misdirected is the 421 for a process that another partition owns.
func misdirected(pid string, owner, self, count int) *Problem {
	p := problem(http.StatusMisdirectedRequest, typeMisdirected,
		"process %q belongs to partition %d of %d; this is partition %d", pid, owner, count, self)
	p.Extra = map[string]any{"process_id": pid, "owner": owner, "partition": self, "partitions": count}
	return p
}
