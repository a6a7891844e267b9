package api

import (
	"fmt"
	"net/http"

	"github.com/flowedge/flowedge/internal/httpx"
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
// for anything but a server fault (see httpx.Problem).
type Problem = httpx.Problem

// marshal is httpx.Marshal: JSON without HTML escaping or trailing newline.
func marshal(v any) ([]byte, error) { return httpx.Marshal(v) }

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
