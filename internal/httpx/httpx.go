// Package httpx holds the HTTP pieces the edge and the api-flow backend
// share: RFC 9457 problem+json errors, a status recorder, request ids,
// Retry-After parsing and hop-by-hop header handling.
package httpx

import (
	"encoding/json"
	"net/http"
	"net/textproto"
	"strings"
)

// WriteJSON writes v as application/json with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// hopHeaders are removed from requests and responses by proxies (RFC 9110
// §7.6.1), like net/http/httputil.ReverseProxy does.
var hopHeaders = []string{
	"Connection",
	"Proxy-Connection",
	"Keep-Alive",
	"Proxy-Authenticate",
	"Proxy-Authorization",
	"Te",
	"Trailer",
	"Transfer-Encoding",
	"Upgrade",
}

// RemoveHopByHop deletes from h the headers named in its Connection header
// and the fixed hop-by-hop list.
func RemoveHopByHop(h http.Header) {
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range hopHeaders {
		h.Del(name)
	}
}

// ClientIP returns the host part of a request's RemoteAddr.
func ClientIP(r *http.Request) string {
	addr := r.RemoteAddr
	if i := strings.LastIndexByte(addr, ':'); i > 0 {
		addr = addr[:i]
	}
	return strings.Trim(addr, "[]")
}
