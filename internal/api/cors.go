package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/rs/cors"
)

// CORS policy: browsers may call the API from the origins of
// Options.AppURLs and, outside production, from any localhost origin
// (http or https, any port, localhost, 127.0.0.1 or [::1]). Credentials
// (cookies) are never allowed: the API authenticates by header. A preflight
// needs no API key; one from another origin gets no
// Access-Control-Allow-Origin, so the browser refuses the call.

// corsMaxAge is how long (seconds) a browser may cache a preflight answer.
const corsMaxAge = 600

// newCORS builds the CORS middleware for the given allowed origins (each
// already normalised by NormalizeOrigin).
func newCORS(production bool, origins []string) *cors.Cors {
	allowed := make(map[string]bool, len(origins))
	for _, o := range origins {
		allowed[o] = true
	}
	return cors.New(cors.Options{
		AllowOriginFunc: func(origin string) bool {
			if allowed[strings.ToLower(origin)] {
				return true
			}
			return !production && localOrigin(origin)
		},
		AllowedMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodDelete},
		AllowedHeaders: []string{"Authorization", "X-API-Key", "X-Process-ID", "Idempotency-Key", "X-Request-ID", "Content-Type"},
		ExposedHeaders: []string{"X-Request-ID", "Location", "Retry-After", "Idempotent-Replayed",
			"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy"},
		MaxAge:               corsMaxAge,
		AllowCredentials:     false,
		OptionsSuccessStatus: http.StatusNoContent,
	})
}

// isPreflight reports whether r is a CORS preflight request.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}

// localOrigin reports whether origin is an http(s) origin on this machine:
// localhost, 127.0.0.1 or [::1], with any port.
func localOrigin(origin string) bool {
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return false
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return false
		}
	}
	switch strings.ToLower(u.Hostname()) {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

// NormalizeOrigin checks that s is an origin — scheme://host[:port], with
// no path, query, fragment or user info — and returns it as browsers send
// it in the Origin header: lower case, without a default port or trailing
// slash. production requires https.
func NormalizeOrigin(s string, production bool) (string, error) {
	u, err := url.Parse(strings.TrimSuffix(strings.TrimSpace(s), "/"))
	if err != nil {
		return "", fmt.Errorf("origin %q: %w", s, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("origin %q: want http:// or https://", s)
	case production && u.Scheme != "https":
		return "", fmt.Errorf("origin %q: production allows only https origins", s)
	case u.Host == "" || u.Hostname() == "":
		return "", fmt.Errorf("origin %q: no host", s)
	case u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || u.ForceQuery:
		return "", fmt.Errorf("origin %q: want scheme://host[:port] only (no path, query or user info)", s)
	}
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	port := u.Port()
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("origin %q: port %q is not from 1 to 65535", s, port)
		}
	}
	if (u.Scheme == "https" && port == "443") || (u.Scheme == "http" && port == "80") {
		port = ""
	}
	if port != "" {
		host += ":" + port
	}
	return u.Scheme + "://" + host, nil
}

// ParseOrigins splits a comma-separated list of origins (APP_URL) and
// normalises each; empty items are skipped.
func ParseOrigins(list string, production bool) ([]string, error) {
	var out []string
	for _, item := range strings.Split(list, ",") {
		if strings.TrimSpace(item) == "" {
			continue
		}
		o, err := NormalizeOrigin(item, production)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}
